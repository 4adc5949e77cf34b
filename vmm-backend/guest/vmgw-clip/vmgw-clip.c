/*
 * vmgw-clip: a minimal clipboard agent for the vmgw test guest.
 *
 * spice-vdagent needs X; this speaks just enough of the VDAgent protocol on the
 * virtio-serial port com.redhat.spice.0 for QEMU's qemu-vdagent (and the SPICE
 * server's spicevmc) to exchange UTF-8 clipboard text with the guest:
 *
 *   vmgw-clip daemon PORT   run the agent on PORT (init starts it: /etc/vmgw/clip-run)
 *   vmgw-clip set TEXT...   the guest "copies" TEXT (the arguments joined by spaces)
 *   vmgw-clip get           prints what the host last pasted into the guest
 *
 * The daemon announces the clipboard-by-demand capability only (no selections, no
 * grab serials), answers the host's grab with a request, the host's request with the
 * text last set, and stores pasted text in /run/vmgw/clip.pasted (written whole,
 * then renamed). `set` hands the text over through the FIFO /run/vmgw/clip.fifo,
 * terminated by a NUL byte. Each event is logged to /run/vmgw/clip.log (sizes only).
 *
 * Wire format (little endian): VDIChunkHeader {u32 port, u32 size} carrying the
 * stream of VDAgentMessage {u32 protocol (1), u32 type, u64 opaque, u32 size, data}.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIFO "/run/vmgw/clip.fifo"
#define PASTED "/run/vmgw/clip.pasted"
#define LOG "/run/vmgw/clip.log"
#define MAX_TEXT (1 << 20)
#define MAX_MSG (MAX_TEXT + 64)

enum {
    VD_AGENT_CLIPBOARD = 4,
    VD_AGENT_ANNOUNCE_CAPABILITIES = 6,
    VD_AGENT_CLIPBOARD_GRAB = 7,
    VD_AGENT_CLIPBOARD_REQUEST = 8,
    VD_AGENT_CLIPBOARD_RELEASE = 9,
    VD_AGENT_CAP_CLIPBOARD_BY_DEMAND = 5,
    UTF8_TEXT = 1,
    VDP_CLIENT_PORT = 1,
};

static int port = -1;
static char *text;        /* the guest's clipboard, set by `vmgw-clip set` */
static size_t text_len;

static void logf_(const char *fmt, unsigned long a)
{
    FILE *f = fopen(LOG, "a");
    if (f) {
        fprintf(f, fmt, a);
        fputc('\n', f);
        fclose(f);
    }
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
}

static uint32_t get32(const unsigned char *p)
{
    return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -1;
        }
        p += w;
        n -= w;
    }
    return 0;
}

/* One VDAgentMessage of `type` with `a` (4 bytes, optional) then `data`. */
static void send_msg(uint32_t type, const unsigned char *a, size_t alen,
                     const unsigned char *data, size_t len)
{
    size_t size = alen + len, total = 20 + size, off = 0;
    unsigned char *m = malloc(total);
    if (!m)
        return;
    put32(m, 1);
    put32(m + 4, type);
    memset(m + 8, 0, 8);
    put32(m + 16, size);
    if (alen)
        memcpy(m + 20, a, alen);
    if (len)
        memcpy(m + 20 + alen, data, len);
    while (off < total) {
        unsigned char hdr[8];
        size_t n = total - off > 2048 ? 2048 : total - off;
        put32(hdr, VDP_CLIENT_PORT);
        put32(hdr + 4, n);
        if (write_all(port, hdr, 8) || write_all(port, m + off, n))
            break;
        off += n;
    }
    free(m);
}

static void send_caps(int request)
{
    unsigned char c[8];
    put32(c, request);
    put32(c + 4, 1u << VD_AGENT_CAP_CLIPBOARD_BY_DEMAND);
    send_msg(VD_AGENT_ANNOUNCE_CAPABILITIES, c, 8, NULL, 0);
}

static void on_message(uint32_t type, const unsigned char *d, uint32_t size)
{
    unsigned char t[4];
    put32(t, UTF8_TEXT);
    switch (type) {
    case VD_AGENT_ANNOUNCE_CAPABILITIES:
        if (size >= 4 && get32(d))
            send_caps(0);
        logf_("caps from host %lu", size >= 8 ? get32(d + 4) : 0);
        break;
    case VD_AGENT_CLIPBOARD_GRAB:
        for (uint32_t i = 0; i + 4 <= size; i += 4) {
            if (get32(d + i) == UTF8_TEXT) {
                send_msg(VD_AGENT_CLIPBOARD_REQUEST, t, 4, NULL, 0);
                logf_("host grabbed the clipboard; requested text (%lu)", 0);
                break;
            }
        }
        break;
    case VD_AGENT_CLIPBOARD_REQUEST:
        send_msg(VD_AGENT_CLIPBOARD, t, 4, (unsigned char *)text, text ? text_len : 0);
        logf_("host requested the guest's text: sent %lu bytes", text ? text_len : 0);
        break;
    case VD_AGENT_CLIPBOARD:
        if (size >= 4 && get32(d) == UTF8_TEXT) {
            FILE *f = fopen(PASTED ".tmp", "w");
            if (f) {
                fwrite(d + 4, 1, size - 4, f);
                fclose(f);
                rename(PASTED ".tmp", PASTED);
            }
            logf_("host pasted %lu bytes", size - 4);
        }
        break;
    case VD_AGENT_CLIPBOARD_RELEASE:
        logf_("host released the clipboard (%lu)", 0);
        break;
    default:
        logf_("ignored message type %lu", type);
    }
}

/* The port's byte stream: chunk headers, then message bytes. */
static unsigned char chunk_hdr[8];
static size_t chunk_hdr_len, chunk_left;
static unsigned char *msg;
static size_t msg_len;

static void on_port_bytes(const unsigned char *p, size_t n)
{
    while (n) {
        if (chunk_left == 0) {
            size_t k = 8 - chunk_hdr_len;
            if (k > n)
                k = n;
            memcpy(chunk_hdr + chunk_hdr_len, p, k);
            chunk_hdr_len += k;
            p += k;
            n -= k;
            if (chunk_hdr_len == 8) {
                chunk_left = get32(chunk_hdr + 4);
                chunk_hdr_len = 0;
            }
            continue;
        }
        size_t k = chunk_left < n ? chunk_left : n;
        if (msg_len + k > MAX_MSG) {
            logf_("message too long, dropped (%lu)", msg_len + k);
            msg_len = 0;
        } else {
            memcpy(msg + msg_len, p, k);
            msg_len += k;
        }
        chunk_left -= k;
        p += k;
        n -= k;
        while (msg_len >= 20 && msg_len >= 20 + (size_t)get32(msg + 16)) {
            size_t size = get32(msg + 16);
            on_message(get32(msg + 4), msg + 20, size);
            memmove(msg, msg + 20 + size, msg_len - 20 - size);
            msg_len -= 20 + size;
        }
    }
}

static int daemon_main(const char *path)
{
    static unsigned char buf[65536];
    static char pending[MAX_TEXT + 1];
    size_t pending_len = 0;
    int fifo;

    msg = malloc(MAX_MSG);
    if (!msg)
        return 1;
    port = open(path, O_RDWR);
    if (port < 0) {
        perror(path);
        return 1;
    }
    unlink(FIFO);
    if (mkfifo(FIFO, 0600) < 0) {
        perror(FIFO);
        return 1;
    }
    /* Opened read-write so that it never reads end-of-file between writers. */
    fifo = open(FIFO, O_RDWR);
    if (fifo < 0) {
        perror(FIFO);
        return 1;
    }
    send_caps(1);
    logf_("agent started (%lu)", 0);
    for (;;) {
        struct pollfd fds[2] = {{port, POLLIN, 0}, {fifo, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = read(port, buf, sizeof buf);
            if (r < 0 && errno != EINTR && errno != EAGAIN)
                return 1;
            if (r == 0) {
                /* The host side is not connected: wait and retry. */
                usleep(200000);
            }
            if (r > 0)
                on_port_bytes(buf, r);
        }
        if (fds[1].revents & POLLIN) {
            ssize_t r = read(fifo, buf, sizeof buf);
            for (ssize_t i = 0; i < r; i++) {
                if (buf[i] != 0) {
                    if (pending_len < MAX_TEXT)
                        pending[pending_len++] = buf[i];
                    continue;
                }
                free(text);
                text = malloc(pending_len + 1);
                if (!text) {
                    text_len = 0;
                    pending_len = 0;
                    continue;
                }
                memcpy(text, pending, pending_len);
                text_len = pending_len;
                pending_len = 0;
                send_msg(VD_AGENT_CLIPBOARD_GRAB, NULL, 0, (unsigned char[]){UTF8_TEXT, 0, 0, 0}, 4);
                logf_("guest copied %lu bytes; grabbed the clipboard", text_len);
            }
        }
    }
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "daemon") == 0)
        return daemon_main(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "set") == 0) {
        int fd = open(FIFO, O_WRONLY | O_NONBLOCK);
        if (fd < 0) {
            perror(FIFO);
            return 1;
        }
        for (int i = 2; i < argc; i++) {
            if (i > 2 && write_all(fd, (const unsigned char *)" ", 1))
                return 1;
            if (write_all(fd, (const unsigned char *)argv[i], strlen(argv[i])))
                return 1;
        }
        return write_all(fd, (const unsigned char *)"", 1) ? 1 : 0;
    }
    if (argc == 2 && strcmp(argv[1], "get") == 0) {
        FILE *f = fopen(PASTED, "r");
        char b[4096];
        size_t n;
        if (!f)
            return 1;
        while ((n = fread(b, 1, sizeof b, f)) > 0)
            fwrite(b, 1, n, stdout);
        fclose(f);
        return 0;
    }
    fprintf(stderr, "usage: vmgw-clip daemon PORT | set TEXT... | get\n");
    return 2;
}
