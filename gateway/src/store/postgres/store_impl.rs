//! [`Store`] for [`PgStore`]: the SQL, in PostgreSQL's dialect; every rule that is not
//! SQL comes from `rows.rs`, shared with the SQLite store.

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, Row};

use super::super::recordings::{
    audit_params, filter_params, AuditEntry, AuditQuery, RecordingFilter, RecordingInfo,
    RecordingRow, RecordingStatus, MAX_RECORDING_LIST, RECORDING_COLS,
};
use super::super::rows::{
    audit_limit, from_ms, inserted, refusal, rotation_time, same_hash, to_ms, AuditRow, KeyRow,
    LinkRow, MaybeUnique, NewToken, TargetRow, TokenRow, Unique, AUDIT_COLS, KEY_COLS, LINK_COLS,
    TARGET_COLS, TOKEN_COLS,
};
use super::super::{
    admin_token_hash, plausible_admin_token, redeemed_audit, AdminTokenInfo, AuditEvent, Grant,
    RedeemError, Store, StoreError, Target,
};
use super::PgStore;
use crate::model::links::Link;
use crate::model::tokens::SigningKey;

type PgResult<T> = Result<T, tokio_postgres::Error>;

impl MaybeUnique for tokio_postgres::Error {
    fn is_unique_violation(&self) -> bool {
        self.code() == Some(&SqlState::UNIQUE_VIOLATION)
    }
}

fn link_row(r: &Row) -> PgResult<LinkRow> {
    Ok(LinkRow {
        id: r.try_get(0)?,
        vm: r.try_get(1)?,
        console: r.try_get(2)?,
        expires_at_ms: r.try_get(3)?,
        not_before_ms: r.try_get(4)?,
        password_hash: r.try_get(5)?,
        max_uses: r.try_get(6)?,
        max_viewers: r.try_get(7)?,
        view_only: r.try_get(8)?,
        allow_power: r.try_get(9)?,
        note: r.try_get(10)?,
        uses: r.try_get(11)?,
        created_at_ms: r.try_get(12)?,
        revoked_at_ms: r.try_get(13)?,
        clipboard: r.try_get(14)?,
        record: r.try_get(15)?,
    })
}

fn token_row(r: &Row) -> PgResult<TokenRow> {
    Ok(TokenRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        created_at_ms: r.try_get(2)?,
        revoked_at_ms: r.try_get(3)?,
    })
}

fn key_row(r: &Row) -> PgResult<KeyRow> {
    Ok(KeyRow {
        kid: r.try_get(0)?,
        secret: r.try_get(1)?,
        created_at_ms: r.try_get(2)?,
        retired: r.try_get(3)?,
    })
}

fn target_row(r: &Row) -> PgResult<TargetRow> {
    Ok(TargetRow {
        name: r.try_get(0)?,
        kind: r.try_get(1)?,
        address_kind: r.try_get(2)?,
        address: r.try_get(3)?,
        vnc_password: r.try_get(4)?,
        created_at_ms: r.try_get(5)?,
    })
}

fn audit_row(r: &Row) -> PgResult<AuditRow> {
    Ok(AuditRow {
        at_ms: r.try_get(0)?,
        kind: r.try_get(1)?,
        link_id: r.try_get(2)?,
        session_id: r.try_get(3)?,
        client: r.try_get(4)?,
        detail: r.try_get(5)?,
    })
}

fn recording_row(r: &Row) -> PgResult<RecordingRow> {
    Ok(RecordingRow {
        id: r.try_get(0)?,
        session_id: r.try_get(1)?,
        link_id: r.try_get(2)?,
        vm: r.try_get(3)?,
        console: r.try_get(4)?,
        channel: r.try_get(5)?,
        gateway: r.try_get(6)?,
        file: r.try_get(7)?,
        started_at_ms: r.try_get(8)?,
        ended_at_ms: r.try_get(9)?,
        bytes: r.try_get(10)?,
        status: r.try_get(11)?,
        detail: r.try_get(12)?,
    })
}

/// An audit row with its id and recording id (columns: id, [`AUDIT_COLS`], recording).
fn audit_entry_row(r: &Row) -> PgResult<(i64, AuditRow, Option<String>)> {
    Ok((
        r.try_get(0)?,
        AuditRow {
            at_ms: r.try_get(1)?,
            kind: r.try_get(2)?,
            link_id: r.try_get(3)?,
            session_id: r.try_get(4)?,
            client: r.try_get(5)?,
            detail: r.try_get(6)?,
        },
        r.try_get(7)?,
    ))
}

fn audit_entry(
    (id, row, recording_id): (i64, AuditRow, Option<String>),
) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id,
        event: row.into_event()?,
        recording_id,
    })
}

/// Converts every row with `read` then `convert`.
fn convert_all<R, T>(
    rows: &[Row],
    read: fn(&Row) -> PgResult<R>,
    convert: fn(R) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(|r| convert(read(r)?)).collect()
}

async fn get_link_on(c: &impl GenericClient, id: &str) -> Result<Option<Link>, StoreError> {
    let sql = format!("SELECT {LINK_COLS} FROM links WHERE id = $1");
    match c.query_opt(&sql, &[&id]).await? {
        Some(r) => Ok(Some(link_row(&r)?.into_link()?)),
        None => Ok(None),
    }
}

async fn all_keys(c: &impl GenericClient) -> Result<Vec<SigningKey>, StoreError> {
    let sql = format!("SELECT {KEY_COLS} FROM signing_keys ORDER BY created_at_ms, seq");
    convert_all(&c.query(&sql, &[]).await?, key_row, KeyRow::into_key)
}

async fn insert_key(c: &impl GenericClient, key: &SigningKey) -> Result<(), StoreError> {
    let k = KeyRow::new(key)?;
    c.execute(
        &format!("INSERT INTO signing_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4)"),
        &[&k.kid, &k.secret, &k.created_at_ms, &k.retired],
    )
    .await?;
    Ok(())
}

/// Takes the lock that serializes signing-key changes across gateways (readers of the
/// table are not blocked).
async fn lock_keys(c: &impl GenericClient) -> Result<(), StoreError> {
    c.batch_execute("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
        .await?;
    Ok(())
}

async fn insert_grant(
    c: &impl GenericClient,
    cookie_sha256: &str,
    link_id: &str,
    expires_at_ms: i64,
    created_at_ms: i64,
) -> Result<(), StoreError> {
    let r = c
        .execute(
            "INSERT INTO grants (cookie_sha256, link_id, expires_at_ms, created_at_ms) \
             VALUES ($1, $2, $3, $4)",
            &[&cookie_sha256, &link_id, &expires_at_ms, &created_at_ms],
        )
        .await;
    inserted(r, Unique::Grant)
}

/// Inserts one audit row (inside the caller's transaction, if any).
async fn insert_audit_on(c: &impl GenericClient, r: &AuditRow) -> Result<(), StoreError> {
    c.execute(
        &format!("INSERT INTO audit ({AUDIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"),
        &[
            &r.at_ms,
            &r.kind,
            &r.link_id,
            &r.session_id,
            &r.client,
            &r.detail,
        ],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// The redemption (and, with `grant`, the visitor's grant, and with `audit` its
    /// `link_redeemed` record) in one transaction: if anything fails before COMMIT (the
    /// grant or audit insert, the connection, the server), the server rolls the use back.
    async fn redeem_and_grant(
        &self,
        id: &str,
        now: OffsetDateTime,
        grant: Option<&str>,
        audit: Option<AuditEvent>,
    ) -> Result<Link, RedeemError> {
        let now_ms = to_ms(now)?;
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(StoreError::from)?;
        // The whole decision is one conditional UPDATE: no read-modify-write window. A
        // concurrent redeemer of the same row waits for it and re-checks the WHERE
        // clause against the updated row (READ COMMITTED re-evaluation).
        let updated = tx
            .query_opt(
                &format!(
                    "UPDATE links SET uses = uses + 1 \
                     WHERE id = $1 \
                       AND revoked_at_ms IS NULL \
                       AND expires_at_ms > $2 \
                       AND (not_before_ms IS NULL OR not_before_ms <= $2) \
                       AND (max_uses IS NULL OR uses < max_uses) \
                     RETURNING {LINK_COLS}"
                ),
                &[&id, &now_ms],
            )
            .await
            .map_err(StoreError::from)?;
        let Some(row) = updated else {
            // Refused: read the row (same transaction) to say why; dropping the
            // transaction rolls it back.
            return Err(refusal(get_link_on(&tx, id).await?, now));
        };
        let link = link_row(&row).map_err(StoreError::from)?.into_link()?;
        if let Some(key) = grant {
            insert_grant(&tx, key, &link.id, to_ms(link.expires_at)?, now_ms).await?;
        }
        if let Some(event) = audit {
            let row = AuditRow::new(redeemed_audit(event, &link))?;
            insert_audit_on(&tx, &row).await?;
        }
        let committed = tx.commit().await.map_err(StoreError::from);
        drop(c); // back to the pool before any check below takes a connection
        match (committed, grant) {
            (Ok(()), _) => Ok(link),
            // The connection failed during COMMIT: the server may have committed. If
            // the grant is there, it did, and the visitor gets the use it paid for.
            (Err(e), Some(key)) if e.is_unavailable() => match self.get_grant(key).await {
                Ok(Some(g)) if g.link_id == link.id => Ok(link),
                _ => Err(e.into()),
            },
            (Err(e), _) => Err(e.into()),
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_link(&self, link: &Link) -> Result<(), StoreError> {
        let l = LinkRow::new(link)?;
        let c = self.pool.get().await?;
        let r = c
            .execute(
                &format!(
                    "INSERT INTO links ({LINK_COLS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
                ),
                &[
                    &l.id,
                    &l.vm,
                    &l.console,
                    &l.expires_at_ms,
                    &l.not_before_ms,
                    &l.password_hash,
                    &l.max_uses,
                    &l.max_viewers,
                    &l.view_only,
                    &l.allow_power,
                    &l.note,
                    &l.uses,
                    &l.created_at_ms,
                    &l.revoked_at_ms,
                    &l.clipboard,
                    &l.record,
                ],
            )
            .await;
        inserted(r, Unique::Link(&l.id))
    }

    async fn get_link(&self, id: &str) -> Result<Option<Link>, StoreError> {
        let c = self.pool.get().await?;
        get_link_on(&*c, id).await
    }

    async fn list_links(&self) -> Result<Vec<Link>, StoreError> {
        let c = self.pool.get().await?;
        let sql = format!("SELECT {LINK_COLS} FROM links ORDER BY created_at_ms DESC, seq DESC");
        convert_all(&c.query(&sql, &[]).await?, link_row, LinkRow::into_link)
    }

    async fn revoke_link(&self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let now = to_ms(now)?;
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE links SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL",
                &[&id, &now],
            )
            .await?;
        tx.execute("DELETE FROM grants WHERE link_id = $1", &[&id])
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn redeem(&self, id: &str, now: OffsetDateTime) -> Result<Link, RedeemError> {
        self.redeem_and_grant(id, now, None, None).await
    }

    async fn redeem_with_grant(
        &self,
        id: &str,
        now: OffsetDateTime,
        cookie_sha256: &str,
    ) -> Result<Link, RedeemError> {
        self.redeem_and_grant(id, now, Some(cookie_sha256), None)
            .await
    }

    async fn redeem_with_grant_audited(
        &self,
        id: &str,
        now: OffsetDateTime,
        cookie_sha256: &str,
        audit: AuditEvent,
    ) -> Result<Link, RedeemError> {
        self.redeem_and_grant(id, now, Some(cookie_sha256), Some(audit))
            .await
    }

    async fn create_admin_token(&self, name: &str) -> Result<(AdminTokenInfo, String), StoreError> {
        let t = NewToken::generate(name)?;
        let c = self.pool.get().await?;
        let r = c
            .execute(
                "INSERT INTO admin_tokens (id, name, token_sha256, created_at_ms) \
                 VALUES ($1, $2, $3, $4)",
                &[&t.row.id, &t.row.name, &t.sha256, &t.row.created_at_ms],
            )
            .await;
        inserted(r, Unique::AdminToken(&t.row.name))?;
        Ok((t.row.into_info()?, t.secret))
    }

    async fn check_admin_token(&self, token: &str) -> Result<Option<AdminTokenInfo>, StoreError> {
        if !plausible_admin_token(token) {
            return Ok(None);
        }
        let hash = admin_token_hash(token);
        let c = self.pool.get().await?;
        let sql = format!(
            "SELECT {TOKEN_COLS}, token_sha256 FROM admin_tokens \
             WHERE token_sha256 = $1 AND revoked_at_ms IS NULL"
        );
        let Some(row) = c.query_opt(&sql, &[&hash]).await? else {
            return Ok(None);
        };
        let stored: String = row.try_get(4)?;
        if same_hash(&stored, &hash) {
            Ok(Some(token_row(&row)?.into_info()?))
        } else {
            Ok(None)
        }
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenInfo>, StoreError> {
        let c = self.pool.get().await?;
        let sql = format!("SELECT {TOKEN_COLS} FROM admin_tokens ORDER BY created_at_ms, seq");
        convert_all(&c.query(&sql, &[]).await?, token_row, TokenRow::into_info)
    }

    async fn revoke_admin_token(&self, id_or_name: &str) -> Result<bool, StoreError> {
        let now = to_ms(OffsetDateTime::now_utc())?;
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let mut n = tx
            .execute(
                "UPDATE admin_tokens SET revoked_at_ms = $2 \
                 WHERE id = $1 AND revoked_at_ms IS NULL",
                &[&id_or_name, &now],
            )
            .await?;
        if n == 0 {
            n = tx
                .execute(
                    "UPDATE admin_tokens SET revoked_at_ms = $2 \
                     WHERE name = $1 AND revoked_at_ms IS NULL",
                    &[&id_or_name, &now],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        let mut c = self.pool.get().await?;
        // The common case reads without a lock; creating the first key takes it, so two
        // gateways starting at once make one key, not two.
        let keys = all_keys(&*c).await?;
        if keys.iter().any(|k| !k.retired) {
            return Ok(keys);
        }
        let tx = c.transaction().await?;
        lock_keys(&tx).await?;
        let mut keys = all_keys(&tx).await?;
        if !keys.iter().any(|k| !k.retired) {
            let key = SigningKey::generate(OffsetDateTime::now_utc());
            insert_key(&tx, &key).await?;
            tracing::info!(kid = %key.kid, "created a token signing key");
            keys = all_keys(&tx).await?;
        }
        tx.commit().await?;
        Ok(keys)
    }

    async fn rotate_signing_key(&self) -> Result<SigningKey, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        lock_keys(&tx).await?;
        let newest: Option<i64> = tx
            .query_one("SELECT MAX(created_at_ms) FROM signing_keys", &[])
            .await?
            .try_get(0)?;
        let at = rotation_time(newest)?;
        tx.execute("UPDATE signing_keys SET retired = TRUE", &[])
            .await?;
        let key = SigningKey::generate(at);
        insert_key(&tx, &key).await?;
        tx.commit().await?;
        tracing::info!(kid = %key.kid, "rotated the token signing key");
        Ok(key)
    }

    async fn remove_signing_key(&self, kid: &str) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let n = c
            .execute("DELETE FROM signing_keys WHERE kid = $1", &[&kid])
            .await?;
        Ok(n == 1)
    }

    async fn put_target(&self, target: &Target) -> Result<(), StoreError> {
        let t = TargetRow::new(target)?;
        let c = self.pool.get().await?;
        let r = c
            .execute(
                &format!("INSERT INTO targets ({TARGET_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"),
                &[
                    &t.name,
                    &t.kind,
                    &t.address_kind,
                    &t.address,
                    &t.vnc_password,
                    &t.created_at_ms,
                ],
            )
            .await;
        inserted(r, Unique::Target(&t.name))
    }

    async fn get_target(&self, name: &str) -> Result<Option<Target>, StoreError> {
        let c = self.pool.get().await?;
        let sql = format!("SELECT {TARGET_COLS} FROM targets WHERE name = $1");
        match c.query_opt(&sql, &[&name]).await? {
            Some(r) => Ok(Some(target_row(&r)?.into_target()?)),
            None => Ok(None),
        }
    }

    async fn list_targets(&self) -> Result<Vec<Target>, StoreError> {
        let c = self.pool.get().await?;
        // COLLATE "C": byte order, as SQLite's default BINARY collation sorts.
        let sql = format!("SELECT {TARGET_COLS} FROM targets ORDER BY name COLLATE \"C\"");
        convert_all(
            &c.query(&sql, &[]).await?,
            target_row,
            TargetRow::into_target,
        )
    }

    async fn delete_target(&self, name: &str) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        Ok(c.execute("DELETE FROM targets WHERE name = $1", &[&name])
            .await?
            == 1)
    }

    async fn audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        let r = AuditRow::new(event)?;
        let c = self.pool.get().await?;
        insert_audit_on(&*c, &r).await
    }

    async fn list_audit(
        &self,
        link_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = audit_limit(limit);
        let c = self.pool.get().await?;
        let sql = format!(
            "SELECT {AUDIT_COLS} FROM audit \
             WHERE ($1::TEXT IS NULL OR link_id = $1) ORDER BY id DESC LIMIT $2"
        );
        let rows = c.query(&sql, &[&link_id, &limit]).await?;
        convert_all(&rows, audit_row, AuditRow::into_event)
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let (link, vm, kind, client, since, until, before, limit) = audit_params(query)?;
        let c = self.pool.get().await?;
        let sql = "SELECT a.id, a.at_ms, a.kind, a.link_id, a.session_id, a.client, a.detail, \
             (SELECT r.id FROM recordings r WHERE r.session_id = a.session_id \
              ORDER BY r.started_at_ms LIMIT 1) \
             FROM audit a \
             WHERE ($1::TEXT IS NULL OR a.link_id = $1) \
             AND ($2::TEXT IS NULL OR a.link_id IN (SELECT id FROM links WHERE vm = $2)) \
             AND ($3::TEXT IS NULL OR a.kind = $3) \
             AND ($4::TEXT IS NULL OR a.client = $4) \
             AND ($5::BIGINT IS NULL OR a.at_ms >= $5) \
             AND ($6::BIGINT IS NULL OR a.at_ms < $6) \
             AND ($7::BIGINT IS NULL OR a.id < $7) \
             ORDER BY a.id DESC LIMIT $8";
        let rows = c
            .query(
                sql,
                &[&link, &vm, &kind, &client, &since, &until, &before, &limit],
            )
            .await?;
        convert_all(&rows, audit_entry_row, audit_entry)
    }

    async fn prune_audit(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let before = to_ms(before)?;
        let c = self.pool.get().await?;
        Ok(c.execute("DELETE FROM audit WHERE at_ms < $1", &[&before])
            .await?)
    }

    async fn put_grant(&self, cookie_sha256: &str, grant: &Grant) -> Result<(), StoreError> {
        let expires = to_ms(grant.expires_at)?;
        let created = to_ms(OffsetDateTime::now_utc())?;
        let c = self.pool.get().await?;
        insert_grant(&*c, cookie_sha256, &grant.link_id, expires, created).await
    }

    async fn get_grant(&self, cookie_sha256: &str) -> Result<Option<Grant>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT link_id, expires_at_ms FROM grants WHERE cookie_sha256 = $1",
                &[&cookie_sha256],
            )
            .await?;
        match row {
            Some(r) => Ok(Some(Grant {
                link_id: r.try_get(0)?,
                expires_at: from_ms(r.try_get(1)?)?,
            })),
            None => Ok(None),
        }
    }

    async fn prune_grants(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let now = to_ms(now)?;
        let c = self.pool.get().await?;
        Ok(
            c.execute("DELETE FROM grants WHERE expires_at_ms <= $1", &[&now])
                .await?,
        )
    }

    async fn put_recording(&self, rec: &RecordingInfo) -> Result<(), StoreError> {
        let r = RecordingRow::new(rec)?;
        let c = self.pool.get().await?;
        let res = c
            .execute(
                &format!(
                    "INSERT INTO recordings ({RECORDING_COLS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                ),
                &[
                    &r.id,
                    &r.session_id,
                    &r.link_id,
                    &r.vm,
                    &r.console,
                    &r.channel,
                    &r.gateway,
                    &r.file,
                    &r.started_at_ms,
                    &r.ended_at_ms,
                    &r.bytes,
                    &r.status,
                    &r.detail,
                ],
            )
            .await;
        inserted(res, Unique::Recording(&r.id))
    }

    async fn finish_recording(
        &self,
        id: &str,
        ended_at: Option<OffsetDateTime>,
        bytes: u64,
        status: RecordingStatus,
        detail: Option<&str>,
    ) -> Result<bool, StoreError> {
        let ended = ended_at.map(to_ms).transpose()?;
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let detail = detail.map(|d| d.replace('\0', "\u{FFFD}"));
        let c = self.pool.get().await?;
        Ok(c.execute(
            "UPDATE recordings SET ended_at_ms = $2, bytes = $3, status = $4, detail = $5 \
             WHERE id = $1",
            &[&id, &ended, &bytes, &status.as_str(), &detail],
        )
        .await?
            == 1)
    }

    async fn get_recording(&self, id: &str) -> Result<Option<RecordingInfo>, StoreError> {
        let c = self.pool.get().await?;
        let sql = format!("SELECT {RECORDING_COLS} FROM recordings WHERE id = $1");
        match c.query_opt(&sql, &[&id]).await? {
            Some(r) => Ok(Some(recording_row(&r)?.into_info()?)),
            None => Ok(None),
        }
    }

    async fn list_recordings(
        &self,
        filter: &RecordingFilter,
        limit: usize,
    ) -> Result<Vec<RecordingInfo>, StoreError> {
        let (link, session, gateway, status, before) = filter_params(filter)?;
        let limit = i64::try_from(limit.min(MAX_RECORDING_LIST)).unwrap_or(0);
        let c = self.pool.get().await?;
        let sql = format!(
            "SELECT {RECORDING_COLS} FROM recordings \
             WHERE ($1::TEXT IS NULL OR link_id = $1) AND ($2::TEXT IS NULL OR session_id = $2) \
             AND ($3::TEXT IS NULL OR gateway = $3) AND ($4::TEXT IS NULL OR status = $4) \
             AND ($5::BIGINT IS NULL OR started_at_ms < $5) \
             ORDER BY started_at_ms DESC, id DESC LIMIT $6"
        );
        let rows = c
            .query(&sql, &[&link, &session, &gateway, &status, &before, &limit])
            .await?;
        convert_all(&rows, recording_row, RecordingRow::into_info)
    }

    async fn delete_recording(&self, id: &str) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        Ok(c.execute("DELETE FROM recordings WHERE id = $1", &[&id])
            .await?
            == 1)
    }

    async fn health(&self) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        let one: i32 = c.query_one("SELECT 1", &[]).await?.try_get(0)?;
        if one != 1 {
            return Err(StoreError::Corrupt("SELECT 1 did not return 1".into()));
        }
        Ok(())
    }
}
