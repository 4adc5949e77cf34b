//! Link passwords: argon2id with OWASP parameters, run off the async runtime (at the
//! lowest CPU priority) with a bounded number of hashes at once.
//!
//! * [`hash`] makes a PHC string (blocking; call it from `spawn_blocking`, or use
//!   [`PasswordVerifier::hash`]).
//! * [`PasswordVerifier::verify`] refuses, without running argon2, passwords over
//!   `max_len`, stored hashes that are not argon2id v19 or whose cost exceeds the policy,
//!   and answers [`PasswordError::Busy`] when the pool is full after a short wait (the
//!   HTTP layer turns that into 503/429 + `Retry-After`).
//!
//! Memory: each hash needs `m_cost_kib` KiB of working memory (19 MiB by default). The
//! verifier owns those blocks and reuses them, at most one set per slot, so password
//! checks never hold more than `max_concurrent` × `m_cost_kib` KiB, however many arrive.
//! (Allocating and freeing 19 MiB per hash let glibc's adaptive mmap threshold move the
//! freed blocks into its per-thread arenas and keep them: a few hundred checks grew the
//! gateway to ~1 GiB, kept after idle time and `malloc_trim`.)
//!
//! Nothing here logs a password or a hash.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

/// Password errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("password must not be empty")]
    Empty,
    #[error("too many password checks in progress; retry shortly")]
    Busy,
    #[error("stored password hash is not a valid argon2id hash")]
    BadHash,
    #[error("stored password hash is more costly than the policy allows")]
    HashTooCostly,
    #[error("invalid password policy: {0}")]
    Policy(&'static str),
    #[error("password hashing failed")]
    Hashing,
    #[error("password task failed")]
    Task,
}

/// argon2id parameters and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Memory cost in KiB (OWASP: 19 MiB).
    pub m_cost_kib: u32,
    /// Iterations (OWASP: 2).
    pub t_cost: u32,
    /// Parallelism (OWASP: 1).
    pub p_cost: u32,
    /// Longest password, in bytes.
    pub max_len: usize,
    /// Hashes running at once.
    pub max_concurrent: usize,
    /// How long a check may wait for a free slot before [`PasswordError::Busy`].
    pub max_wait: Duration,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        PasswordPolicy {
            m_cost_kib: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
            max_len: 128,
            // argon2 is CPU-bound: more hashes than cores only adds latency for the
            // relays. One per core keeps a password flood from starving live consoles.
            max_concurrent: cores.max(1),
            max_wait: Duration::from_millis(100),
        }
    }
}

impl PasswordPolicy {
    /// Checks the argon2 parameters and limits.
    pub fn validate(&self) -> Result<(), PasswordError> {
        self.argon2()?;
        if self.max_concurrent == 0 {
            return Err(PasswordError::Policy("max_concurrent must be at least 1"));
        }
        if self.max_len == 0 {
            return Err(PasswordError::Policy("max_len must be at least 1"));
        }
        Ok(())
    }

    fn argon2(&self) -> Result<Argon2<'static>, PasswordError> {
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, None)
            .map_err(|_| PasswordError::Policy("argon2 parameters out of range"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    fn check_password(&self, password: &str) -> Result<(), PasswordError> {
        if password.len() > self.max_len {
            return Err(PasswordError::TooLong { max: self.max_len });
        }
        Ok(())
    }

    /// Parses a stored hash and checks it is argon2id v19 within this policy's costs.
    fn check_stored<'a>(&self, phc: &'a str) -> Result<PasswordHash<'a>, PasswordError> {
        if phc.len() > 512 {
            return Err(PasswordError::BadHash);
        }
        let parsed = PasswordHash::new(phc).map_err(|_| PasswordError::BadHash)?;
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return Err(PasswordError::BadHash);
        }
        if parsed.version != Some(Version::V0x13.into()) {
            return Err(PasswordError::BadHash);
        }
        if parsed.salt.is_none() || parsed.hash.is_none() {
            return Err(PasswordError::BadHash);
        }
        let params = Params::try_from(&parsed).map_err(|_| PasswordError::BadHash)?;
        if params.m_cost() > self.m_cost_kib
            || params.t_cost() > self.t_cost
            || params.p_cost() > self.p_cost
        {
            return Err(PasswordError::HashTooCostly);
        }
        Ok(parsed)
    }
}

/// Bytes of a new hash's output (argon2's default).
const OUTPUT_LEN: usize = 32;

/// Working memory for one argon2 hash under `policy`: `m_cost_kib` blocks of 1 KiB,
/// enough for any stored hash the policy accepts (its `m` is at most the policy's).
fn new_memory(policy: &PasswordPolicy) -> Vec<Block> {
    vec![Block::default(); policy.m_cost_kib as usize]
}

/// Hashes `password` with argon2id under `policy` and returns the PHC string. Blocking
/// (tens of milliseconds): run it off the async runtime. Allocates its working memory
/// for this one hash: a server should use [`PasswordVerifier::hash`], which reuses it.
pub fn hash(password: &str, policy: &PasswordPolicy) -> Result<String, PasswordError> {
    hash_with(password, policy, &mut new_memory(policy))
}

fn hash_with(
    password: &str,
    policy: &PasswordPolicy,
    memory: &mut [Block],
) -> Result<String, PasswordError> {
    policy.check_password(password)?;
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    let argon2 = policy.argon2()?;
    let mut salt = [0u8; 16];
    crate::model::links::os_random(&mut salt);
    let salt_string = SaltString::encode_b64(&salt).map_err(|_| PasswordError::Hashing)?;
    let output = Output::init_with(OUTPUT_LEN, |out| {
        argon2
            .hash_password_into_with_memory(password.as_bytes(), &salt, out, &mut *memory)
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(|_| PasswordError::Hashing)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|_| PasswordError::Hashing)?,
        salt: Some(salt_string.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Checks `password` against `phc` (blocking). Refuses over-long passwords and stored
/// hashes outside the policy before running argon2. Allocates its working memory for
/// this one check: a server should use [`PasswordVerifier::verify`], which reuses it.
pub fn verify_blocking(
    password: &str,
    phc: &str,
    policy: &PasswordPolicy,
) -> Result<bool, PasswordError> {
    verify_with(password, phc, policy, &mut new_memory(policy))
}

fn verify_with(
    password: &str,
    phc: &str,
    policy: &PasswordPolicy,
    memory: &mut [Block],
) -> Result<bool, PasswordError> {
    policy.check_password(password)?;
    let parsed = policy.check_stored(phc)?;
    if password.is_empty() {
        return Ok(false);
    }
    // check_stored made sure of argon2id v19, a salt and a hash; re-derive with the
    // stored parameters (output length included) into our own memory.
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(PasswordError::BadHash);
    };
    let params = Params::try_from(&parsed).map_err(|_| PasswordError::BadHash)?;
    let mut salt_buf = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_buf)
        .map_err(|_| PasswordError::BadHash)?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let computed = Output::init_with(expected.len(), |out| {
        argon2
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut *memory)
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(|_| PasswordError::BadHash)?;
    // `Output`'s equality is constant-time.
    Ok(computed == expected)
}

/// argon2 working memory, kept and reused. Only a slot holder takes a set, so there are
/// never more sets than slots.
struct MemoryPool {
    free: Mutex<Vec<Vec<Block>>>,
}

impl MemoryPool {
    fn take(&self, policy: &PasswordPolicy) -> Vec<Block> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.pop().unwrap_or_else(|| new_memory(policy))
    }

    fn give(&self, memory: Vec<Block>) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.push(memory);
    }

    fn sets(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Runs `f` (an argon2 hash) on a thread of its own at the lowest CPU priority (nice 19
/// on Linux): argon2 gets the core when the relays and the handshakes leave it, so a
/// flood of wrong passwords cannot slow live consoles. Not on the blocking pool: its
/// threads also run the store's calls, and a thread cannot take its priority back once
/// lowered (that needs `CAP_SYS_NICE`). At most `max_concurrent` run at once (the
/// slots); starting a thread costs microseconds against a hash's tens of milliseconds.
async fn at_low_priority<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("vmgw-argon2".into())
        .spawn(move || {
            crate::engine::priority::lower_current_thread(crate::engine::priority::LOWEST);
            let _ = tx.send(f());
        })
        .map_err(|_| PasswordError::Task)?;
    rx.await.map_err(|_| PasswordError::Task)
}

/// Bounded argon2 pool: at most `max_concurrent` hashes run at once, each on a thread of
/// its own at low priority ([`at_low_priority`]); a caller that finds it full waits at most `max_wait`, then gets
/// [`PasswordError::Busy`].
pub struct PasswordVerifier {
    policy: Arc<PasswordPolicy>,
    slots: Arc<Semaphore>,
    memory: Arc<MemoryPool>,
}

impl fmt::Debug for PasswordVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordVerifier")
            .field("policy", &self.policy)
            .field("available", &self.slots.available_permits())
            .field("memory_sets", &self.memory.sets())
            .finish()
    }
}

impl PasswordVerifier {
    /// A pool for `policy`. `max_concurrent` 0 is taken as 1. Invalid argon2 parameters
    /// are reported by [`PasswordPolicy::validate`] (call it when loading the
    /// configuration) and, failing that, by every [`PasswordVerifier::hash`].
    pub fn new(policy: PasswordPolicy) -> PasswordVerifier {
        PasswordVerifier {
            slots: Arc::new(Semaphore::new(policy.max_concurrent.max(1))),
            policy: Arc::new(policy),
            memory: Arc::new(MemoryPool {
                free: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn policy(&self) -> &PasswordPolicy {
        &self.policy
    }

    /// Free slots right now (for metrics).
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, PasswordError> {
        if let Ok(p) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(p);
        }
        if self.policy.max_wait.is_zero() {
            return Err(PasswordError::Busy);
        }
        match tokio::time::timeout(
            self.policy.max_wait,
            Arc::clone(&self.slots).acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => Ok(p),
            _ => Err(PasswordError::Busy),
        }
    }

    /// Checks a visitor's password against a stored PHC string. `Ok(false)` is a wrong
    /// password; errors are refusals (too long, busy, bad or too costly stored hash).
    pub async fn verify(&self, password: &str, phc: &str) -> Result<bool, PasswordError> {
        // Cheap refusals first, without a slot and without hashing.
        self.policy.check_password(password)?;
        self.policy.check_stored(phc)?;
        if password.is_empty() {
            return Ok(false);
        }
        let permit = self.slot().await?;
        let (policy, pool) = (Arc::clone(&self.policy), Arc::clone(&self.memory));
        let password = password.to_owned();
        let phc = phc.to_owned();
        at_low_priority(move || {
            let mut memory = pool.take(&policy);
            let r = verify_with(&password, &phc, &policy, &mut memory);
            pool.give(memory);
            drop(permit);
            r
        })
        .await?
    }

    /// Hashes a new link password in the pool (same limits as `verify`).
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        self.check_new(password)?;
        let permit = self.slot().await?;
        self.hash_in_slot(password, permit).await
    }

    /// Like [`PasswordVerifier::hash`], but waits for a slot as long as it takes instead
    /// of answering [`PasswordError::Busy`]: for authenticated callers (an admin creating
    /// a link), who should queue behind a visitor flood rather than fail, while staying
    /// within the same memory and CPU bound.
    pub async fn hash_queued(&self, password: &str) -> Result<String, PasswordError> {
        self.check_new(password)?;
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Task)?;
        self.hash_in_slot(password, permit).await
    }

    fn check_new(&self, password: &str) -> Result<(), PasswordError> {
        self.policy.check_password(password)?;
        if password.is_empty() {
            return Err(PasswordError::Empty);
        }
        Ok(())
    }

    async fn hash_in_slot(
        &self,
        password: &str,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<String, PasswordError> {
        let (policy, pool) = (Arc::clone(&self.policy), Arc::clone(&self.memory));
        let password = password.to_owned();
        at_low_priority(move || {
            let mut memory = pool.take(&policy);
            let r = hash_with(&password, &policy, &mut memory);
            pool.give(memory);
            drop(permit);
            r
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Cheap parameters so the tests run fast in debug builds.
    fn cheap() -> PasswordPolicy {
        PasswordPolicy {
            m_cost_kib: 256,
            t_cost: 1,
            p_cost: 1,
            max_concurrent: 2,
            ..PasswordPolicy::default()
        }
    }

    #[test]
    fn defaults_are_owasp() {
        let p = PasswordPolicy::default();
        assert_eq!((p.m_cost_kib, p.t_cost, p.p_cost), (19456, 2, 1));
        assert_eq!(p.max_len, 128);
        assert!(p.max_concurrent >= 1);
    }

    #[test]
    fn hash_is_argon2id_phc_with_policy_params() {
        let phc = hash("correct horse", &cheap()).expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{phc}");
        // Salted: two hashes differ.
        assert_ne!(phc, hash("correct horse", &cheap()).expect("hash"));
        assert!(!phc.contains("correct"));
    }

    #[test]
    fn default_policy_round_trip() {
        let p = PasswordPolicy::default();
        let phc = hash("s3cret", &p).expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(verify_blocking("s3cret", &phc, &p), Ok(true));
        assert_eq!(verify_blocking("s3cret!", &phc, &p), Ok(false));
    }

    /// Hashes made in our own (reused, dirty) memory are the library's hashes: each
    /// side verifies the other's.
    #[test]
    fn own_memory_hashes_match_the_library() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let p = cheap();
        let mut memory = new_memory(&p);
        // Dirty the memory with an unrelated hash first.
        hash_with("something else", &p, &mut memory).expect("hash");
        let ours = hash_with("pw", &p, &mut memory).expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert_eq!(Argon2::default().verify_password(b"pw", &parsed), Ok(()));
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let theirs = p
            .argon2()
            .expect("argon2")
            .hash_password(b"pw", &salt)
            .expect("hash")
            .to_string();
        assert_eq!(ours.len(), theirs.len());
        assert_eq!(verify_with("pw", &theirs, &p, &mut memory), Ok(true));
        assert_eq!(verify_with("pW", &theirs, &p, &mut memory), Ok(false));
        // A cheaper (older-policy) hash uses a prefix of the memory.
        let old = PasswordPolicy {
            m_cost_kib: 64,
            ..cheap()
        };
        let old_phc = hash("pw", &old).expect("hash");
        assert_eq!(verify_with("pw", &old_phc, &p, &mut memory), Ok(true));
    }

    /// However many checks arrive, the verifier keeps at most one memory set per slot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_sets_bounded_by_slots() {
        let v = Arc::new(PasswordVerifier::new(PasswordPolicy {
            max_wait: Duration::from_secs(60),
            ..cheap()
        }));
        let phc = v.hash("pw").await.expect("hash");
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let (v, phc) = (Arc::clone(&v), phc.clone());
                tokio::spawn(async move {
                    let pw = if i % 2 == 0 { "pw" } else { "nope" };
                    assert_eq!(v.verify(pw, &phc).await, Ok(i % 2 == 0));
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join");
        }
        assert!(v.hash_queued("pw").await.is_ok());
        let sets = v.memory.sets();
        assert!((1..=2).contains(&sets), "{sets} memory sets for 2 slots");
    }

    #[tokio::test]
    async fn round_trip_and_wrong_password() {
        let v = PasswordVerifier::new(cheap());
        let phc = v.hash("pässwörd").await.expect("hash");
        assert_eq!(v.verify("pässwörd", &phc).await, Ok(true));
        assert_eq!(v.verify("passwörd", &phc).await, Ok(false));
        assert_eq!(v.verify("", &phc).await, Ok(false));
        assert_eq!(v.available(), 2);
    }

    #[tokio::test]
    async fn over_long_password_rejected_fast() {
        let v = PasswordVerifier::new(PasswordPolicy::default());
        let phc = hash("x", &cheap()).expect("hash");
        let long = "a".repeat(129);
        let t = Instant::now();
        assert_eq!(
            v.verify(&long, &phc).await,
            Err(PasswordError::TooLong { max: 128 })
        );
        assert_eq!(
            v.verify(&"a".repeat(1 << 20), &phc).await,
            Err(PasswordError::TooLong { max: 128 })
        );
        assert_eq!(
            v.hash(&long).await,
            Err(PasswordError::TooLong { max: 128 })
        );
        assert_eq!(
            hash(&long, &cheap()),
            Err(PasswordError::TooLong { max: 128 })
        );
        assert!(t.elapsed() < Duration::from_millis(50));
        // 128 bytes is fine.
        let phc = hash(&"a".repeat(128), &cheap()).expect("hash");
        assert_eq!(verify_blocking(&"a".repeat(128), &phc, &cheap()), Ok(true));
    }

    #[tokio::test]
    async fn costly_or_foreign_hashes_refused_without_running() {
        let v = PasswordVerifier::new(cheap());
        let salt = "c29tZXNhbHRzb21lc2FsdA";
        let out = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        // m, t, p each above the (cheap) policy: refused, instantly — an m of 4 GiB would
        // otherwise allocate 4 GiB.
        for params in ["m=4194304,t=1,p=1", "m=256,t=1000,p=1", "m=256,t=1,p=8"] {
            let phc = format!("$argon2id$v=19${params}${salt}${out}");
            let t = Instant::now();
            assert_eq!(
                v.verify("pw", &phc).await,
                Err(PasswordError::HashTooCostly),
                "{params}"
            );
            assert!(t.elapsed() < Duration::from_millis(50));
        }
        // Other algorithms / versions / garbage.
        for phc in [
            format!("$argon2i$v=19$m=256,t=1,p=1${salt}${out}"),
            format!("$argon2d$v=19$m=256,t=1,p=1${salt}${out}"),
            format!("$argon2id$v=16$m=256,t=1,p=1${salt}${out}"),
            format!("$argon2id$m=256,t=1,p=1${salt}${out}"),
            format!("$argon2id$v=19$m=256,t=1,p=1${salt}"),
            "$2b$12$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyzABCDE".to_owned(),
            "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA".to_owned(),
            "plaintext".to_owned(),
            String::new(),
            format!("$argon2id$v=19$m=256,t=1,p=1${}${out}", "s".repeat(600)),
        ] {
            assert_eq!(
                v.verify("pw", &phc).await,
                Err(PasswordError::BadHash),
                "{phc}"
            );
        }
        // A cheaper-than-policy hash (e.g. from an older policy) still verifies.
        let old = hash(
            "pw",
            &PasswordPolicy {
                m_cost_kib: 64,
                ..cheap()
            },
        )
        .expect("hash");
        assert_eq!(v.verify("pw", &old).await, Ok(true));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_when_saturated() {
        let policy = PasswordPolicy {
            max_concurrent: 1,
            max_wait: Duration::from_millis(20),
            ..cheap()
        };
        let v = Arc::new(PasswordVerifier::new(policy));
        let phc = hash("pw", &cheap()).expect("hash");
        // Hold the only slot, as a running hash would.
        let held = Arc::clone(&v.slots).try_acquire_owned().expect("slot");
        let t = Instant::now();
        assert_eq!(v.verify("pw", &phc).await, Err(PasswordError::Busy));
        assert_eq!(v.hash("pw").await, Err(PasswordError::Busy));
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        drop(held);
        assert_eq!(v.verify("pw", &phc).await, Ok(true));

        // A real flood: many concurrent checks against a pool of one with no waiting;
        // some are refused as Busy, none blocks, every answer is Ok(_) or Busy.
        let policy = PasswordPolicy {
            max_concurrent: 1,
            max_wait: Duration::ZERO,
            ..PasswordPolicy::default()
        };
        let v = Arc::new(PasswordVerifier::new(policy));
        let phc = hash("pw", &PasswordPolicy::default()).expect("hash");
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let v = Arc::clone(&v);
            let phc = phc.clone();
            tasks.push(tokio::spawn(async move { v.verify("wrong", &phc).await }));
        }
        let (mut busy, mut ran) = (0, 0);
        for t in tasks {
            match t.await.expect("join") {
                Err(PasswordError::Busy) => busy += 1,
                Ok(false) => ran += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(busy >= 1, "busy={busy} ran={ran}");
        assert!(ran >= 1, "busy={busy} ran={ran}");
        assert_eq!(v.available(), 1);
    }

    #[tokio::test]
    async fn invalid_policies() {
        assert_eq!(PasswordPolicy::default().validate(), Ok(()));
        assert!(matches!(
            PasswordPolicy {
                max_concurrent: 0,
                ..cheap()
            }
            .validate(),
            Err(PasswordError::Policy(_))
        ));
        let zero_t = PasswordPolicy {
            t_cost: 0,
            ..cheap()
        };
        assert!(matches!(zero_t.validate(), Err(PasswordError::Policy(_))));
        assert!(matches!(hash("pw", &zero_t), Err(PasswordError::Policy(_))));
        // max_concurrent 0 still gives a usable pool of one.
        let v = PasswordVerifier::new(PasswordPolicy {
            max_concurrent: 0,
            ..cheap()
        });
        assert_eq!(v.available(), 1);
        assert!(v.hash("pw").await.is_ok());
    }
}
