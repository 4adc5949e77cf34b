//! `gateway link …` and `gateway admin-token …`: links and admin tokens from the command
//! line, through the same engine as the admin API, on the same store. A revocation made
//! here reaches a running gateway within its revocation poll interval.

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::cli::args::{JsonFlag, NameArgs};
use gateway::config::Config;
use gateway::model::links::{ConsoleType, LinkRequest};

#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Create a share link and print its URL.
    Create(Box<CreateArgs>),
    /// List links.
    List(JsonFlag),
    /// Show one link.
    Show(NameArgs),
    /// Revoke a link (a running gateway ends its sessions).
    Revoke(NameArgs),
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Create an admin API token (printed once; only its hash is stored).
    Create(NameArgs),
    /// List admin tokens.
    List(JsonFlag),
    /// Revoke an admin token by id or name.
    Revoke(NameArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List signing keys (ids, age, whether retired); never the secrets.
    List(JsonFlag),
    /// Make a new key the signer; older keys keep verifying until removed.
    Rotate,
    /// Remove a key: tokens it signed stop working.
    Remove(NameArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// VM (or registered target) name.
    #[arg(long)]
    vm: String,
    /// vnc, spice, raw (an external byte-stream target) or serial (a VM's serial port).
    #[arg(long, default_value = "vnc")]
    console: String,
    /// Lifetime in seconds (or use --expires-at).
    #[arg(long, conflicts_with = "expires_at")]
    ttl: Option<u64>,
    /// RFC 3339 expiry time.
    #[arg(long)]
    expires_at: Option<String>,
    /// RFC 3339 start time (not valid before).
    #[arg(long)]
    not_before: Option<String>,
    /// Password; read from the environment variable VMGW_LINK_PASSWORD when set, so it
    /// need not appear in the process list.
    #[arg(long, env = "VMGW_LINK_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    #[arg(long)]
    max_uses: Option<u32>,
    #[arg(long)]
    max_viewers: Option<u32>,
    #[arg(long)]
    view_only: bool,
    #[arg(long)]
    allow_power: bool,
    #[arg(long)]
    note: Option<String>,
    /// Clipboard policy: none, to_guest (the default), from_guest or both. View-only
    /// links never write to the guest.
    #[arg(long)]
    clipboard: Option<String>,
    /// Record every session (`true`), none (`false`); default: the gateway's
    /// `recording.default`.
    #[arg(long)]
    record: Option<bool>,
    /// Base URL printed in the link (default: the config's public_url).
    #[arg(long)]
    public_url: Option<String>,
    #[arg(long)]
    json: bool,
}

fn rfc3339(s: &str) -> anyhow::Result<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{s:?} is not an RFC 3339 time"))
}

pub(crate) async fn engine(
    cfg: Config,
    public_url: Option<String>,
) -> anyhow::Result<std::sync::Arc<gateway::engine::App>> {
    let store = gateway::launch::open_store(&cfg).await?;
    let backend = std::sync::Arc::new(gateway::launch::open_backend(&cfg, false)?);
    let base = public_url
        .or_else(|| cfg.public_url.clone())
        .unwrap_or_else(|| cfg.public_base(cfg.public_listen));
    gateway::engine::App::new(cfg, base.trim_end_matches('/').to_owned(), store, backend)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

pub async fn run_link(cmd: LinkCommand, cfg: Config) -> anyhow::Result<()> {
    match cmd {
        LinkCommand::Create(a) => {
            let console: ConsoleType =
                serde_json::from_value(serde_json::Value::String(a.console.clone()))
                    .with_context(|| format!("unknown console {:?}", a.console))?;
            let req = LinkRequest {
                vm: a.vm.clone(),
                console: Some(console),
                expires_at: a.expires_at.as_deref().map(rfc3339).transpose()?,
                ttl_seconds: a.ttl,
                not_before: a.not_before.as_deref().map(rfc3339).transpose()?,
                password: a.password.clone().map(gateway::model::secret::Secret::from),
                max_uses: a.max_uses,
                max_viewers: a.max_viewers,
                view_only: a.view_only,
                allow_power: a.allow_power,
                note: a.note.clone(),
                clipboard: a
                    .clipboard
                    .as_deref()
                    .map(str::parse::<gateway::model::clipboard::ClipboardPolicy>)
                    .transpose()?,
                record: a.record,
            };
            let app = engine(cfg, a.public_url.clone()).await?;
            let created = app
                .create_link(req, None)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if a.json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                println!(
                    "link {} for {} (expires {})",
                    created.link.id, created.link.vm, created.link.expires_at
                );
                println!("{}", created.url);
            }
        }
        LinkCommand::List(j) => {
            let store = gateway::launch::open_store(&cfg).await?;
            let links = store.list_links().await?;
            if j.json {
                println!("{}", serde_json::to_string(&links)?);
            } else {
                println!(
                    "{:<24} {:<16} {:<6} {:>5} {:<8} EXPIRES",
                    "ID", "VM", "CONS", "USES", "STATE"
                );
                let now = time::OffsetDateTime::now_utc();
                for l in links {
                    let state = match l.check(now) {
                        Ok(()) => "active",
                        Err(r) => r.reason(),
                    };
                    let uses = match l.max_uses {
                        Some(m) => format!("{}/{m}", l.uses),
                        None => l.uses.to_string(),
                    };
                    println!(
                        "{:<24} {:<16} {:<6} {:>5} {:<8} {}",
                        l.id,
                        l.vm,
                        l.console.as_str(),
                        uses,
                        state,
                        l.expires_at
                    );
                }
            }
        }
        LinkCommand::Show(a) => {
            let store = gateway::launch::open_store(&cfg).await?;
            let link = store
                .get_link(&a.name)
                .await?
                .with_context(|| format!("no link {:?}", a.name))?;
            println!(
                "{}",
                if a.json {
                    serde_json::to_string(&link)?
                } else {
                    serde_json::to_string_pretty(&link)?
                }
            );
        }
        LinkCommand::Revoke(a) => {
            let app = engine(cfg, None).await?;
            let link = app
                .revoke_link(&a.name, None)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if a.json {
                println!("{}", serde_json::to_string(&link)?);
            } else {
                println!("revoked {}", link.id);
            }
        }
    }
    Ok(())
}

pub async fn run_admin_token(cmd: AdminTokenCommand, cfg: &Config) -> anyhow::Result<()> {
    let store = gateway::launch::open_store(cfg).await?;
    match cmd {
        AdminTokenCommand::Create(a) => {
            let (info, secret) = store.create_admin_token(&a.name).await?;
            if a.json {
                println!("{}", serde_json::json!({"token": secret, "info": info}));
            } else {
                eprintln!("admin token {:?} created; it is shown only now:", a.name);
                println!("{secret}");
            }
        }
        AdminTokenCommand::List(j) => {
            let tokens = store.list_admin_tokens().await?;
            if j.json {
                println!("{}", serde_json::to_string(&tokens)?);
            } else {
                for t in tokens {
                    println!("{}", serde_json::to_string(&t)?);
                }
            }
        }
        AdminTokenCommand::Revoke(a) => {
            if store.revoke_admin_token(&a.name).await? {
                println!("revoked {}", a.name);
            } else {
                anyhow::bail!("no admin token {:?}", a.name);
            }
        }
    }
    Ok(())
}

pub async fn run_key(cmd: KeyCommand, cfg: &Config) -> anyhow::Result<()> {
    let store = gateway::launch::open_store(cfg).await?;
    match cmd {
        KeyCommand::List(j) => {
            let keys = store.signing_keys().await?;
            let rows: Vec<_> = keys
                .iter()
                .map(|k| serde_json::json!({"kid": k.kid, "created_at": k.created_at.to_string(), "retired": k.retired}))
                .collect();
            if j.json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for k in keys {
                    println!(
                        "{} {} {}",
                        k.kid,
                        k.created_at,
                        if k.retired {
                            "retired (verifies only)"
                        } else {
                            "signing"
                        }
                    );
                }
            }
        }
        KeyCommand::Rotate => {
            let k = store.rotate_signing_key().await?;
            println!("new signing key {}", k.kid);
        }
        KeyCommand::Remove(a) => {
            if store.remove_signing_key(&a.name).await? {
                println!("removed {}", a.name);
            } else {
                anyhow::bail!("no signing key {:?}", a.name);
            }
        }
    }
    Ok(())
}
