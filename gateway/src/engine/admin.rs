//! The administrator's operations: links, sessions, VMs, targets and the audit log, as
//! the admin API and the CLI use them. Every change that matters is audited here.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use vmm_backend::nic::{NicRequest, NicSpec};
use vmm_backend::{GuestAddress, PowerAction, VmInfo};

use super::{App, EngineError};
use crate::engine::sessions::{EndReason, SessionInfo};
use crate::model::links::{ConsoleType, Link};
use crate::model::secret::Secret;
use crate::store::{AuditEvent, AuditKind, StoreError, Target, TargetAddress};

/// A link in the admin list: the stored link, its live sessions and its URL.
#[derive(Debug, Serialize)]
pub struct LinkSummary {
    #[serde(flatten)]
    pub link: Link,
    pub live_sessions: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One link in detail: also its sessions and a token to share again.
#[derive(Debug, Serialize)]
pub struct LinkDetail {
    #[serde(flatten)]
    pub link: Link,
    pub sessions: Vec<SessionInfo>,
    pub live_sessions: usize,
    pub url: String,
    pub token: String,
}

/// `POST /targets`: an external console, at a TCP `address` or a unix `socket`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub name: String,
    pub kind: ConsoleType,
    /// `host:port` for TCP.
    #[serde(default)]
    pub address: Option<String>,
    /// A unix socket path (confined, see [`crate::engine::confine`]).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub vnc_password: Option<Secret>,
}

impl App {
    /// Whether `token` is a valid admin bearer token.
    pub async fn check_admin_token(&self, token: &str) -> Result<(), EngineError> {
        match self.store.check_admin_token(token).await? {
            Some(_) => Ok(()),
            None => Err(EngineError::Unauthorized("invalid_token")),
        }
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics_text(&self) -> String {
        self.metrics.render(
            self.sessions.count(),
            self.open_public_conns
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    pub async fn list_links(&self) -> Result<Vec<LinkSummary>, EngineError> {
        let links = self.store.list_links().await?;
        Ok(links
            .into_iter()
            .map(|link| LinkSummary {
                live_sessions: self.sessions.count_for(&link.id),
                url: self.link_url(&link).ok().map(|(url, _)| url),
                link,
            })
            .collect())
    }

    pub async fn link_detail(&self, id: &str) -> Result<LinkDetail, EngineError> {
        let link = self.get_link(id).await?;
        let (url, token) = self.link_url(&link)?;
        Ok(LinkDetail {
            sessions: self.sessions.list(Some(id)),
            live_sessions: self.sessions.count_for(id),
            url,
            token,
            link,
        })
    }

    pub async fn get_link(&self, id: &str) -> Result<Link, EngineError> {
        self.store.get_link(id).await?.ok_or(EngineError::NotFound)
    }

    /// The live sessions of a link (404 for an unknown link).
    pub async fn link_sessions(&self, id: &str) -> Result<Vec<SessionInfo>, EngineError> {
        self.get_link(id).await?;
        Ok(self.sessions.list(Some(id)))
    }

    pub fn list_sessions(&self) -> Vec<SessionInfo> {
        self.sessions.list(None)
    }

    /// Ends one live session (`4003 killed`).
    pub async fn kill_session(&self, id: &str, client: Option<IpAddr>) -> Result<(), EngineError> {
        let s = self.sessions.get(id).ok_or(EngineError::NotFound)?;
        self.sessions.end(id, EndReason::Killed);
        self.audit(
            AuditKind::SessionKilled,
            Some(&s.link_id),
            Some(id),
            client,
            None,
        )
        .await;
        Ok(())
    }

    pub async fn list_vms(&self) -> Result<Vec<VmInfo>, EngineError> {
        Ok(self.backend.list().await?)
    }

    pub async fn get_vm(&self, name: &str) -> Result<VmInfo, EngineError> {
        Ok(self.backend.get(name).await?)
    }

    /// An admin's power action on a VM, audited.
    pub async fn vm_power(
        &self,
        name: &str,
        action: PowerAction,
        client: Option<IpAddr>,
    ) -> Result<VmInfo, EngineError> {
        let info = self.backend.power(name, action).await?;
        self.audit(
            AuditKind::VmAction,
            None,
            None,
            client,
            Some(format!("admin {action:?} {name}")),
        )
        .await;
        Ok(info)
    }

    pub async fn guest_addresses(&self, name: &str) -> Result<Vec<GuestAddress>, EngineError> {
        Ok(self.backend.guest_addresses(name).await?)
    }

    /// A PNG of a running VM's screen.
    pub async fn screenshot(&self, name: &str) -> Result<Vec<u8>, EngineError> {
        Ok(self.backend.screenshot(name).await?)
    }

    pub async fn vm_nics(&self, name: &str) -> Result<Vec<NicSpec>, EngineError> {
        Ok(self.backend.get(name).await?.spec.nics)
    }

    /// Adds a NIC (hot-plugged when the VM runs), audited.
    pub async fn add_nic(
        &self,
        name: &str,
        nic: NicRequest,
        client: Option<IpAddr>,
    ) -> Result<NicSpec, EngineError> {
        let spec = self.backend.add_nic(name, nic).await?;
        let what = format!("admin add nic {} to {name}", spec.id);
        self.audit(AuditKind::VmAction, None, None, client, Some(what))
            .await;
        Ok(spec)
    }

    /// Removes a NIC (hot-unplugged when the VM runs), audited.
    pub async fn remove_nic(
        &self,
        name: &str,
        id: &str,
        client: Option<IpAddr>,
    ) -> Result<NicSpec, EngineError> {
        let spec = self.backend.remove_nic(name, id).await?;
        let what = format!("admin remove nic {id} from {name}");
        self.audit(AuditKind::VmAction, None, None, client, Some(what))
            .await;
        Ok(spec)
    }

    /// Sets (or clears) a VM's keyboard layout, audited. Consoles opened afterwards use
    /// it; the guest itself is not changed.
    pub async fn set_keyboard_layout(
        &self,
        name: &str,
        layout: Option<vmm_backend::keyboard::KeyboardLayout>,
        client: Option<IpAddr>,
    ) -> Result<VmInfo, EngineError> {
        let what = match &layout {
            Some(l) => format!("admin set keyboard layout of {name} to {l}"),
            None => format!("admin clear keyboard layout of {name}"),
        };
        self.backend.set_keyboard_layout(name, layout).await?;
        self.audit(AuditKind::VmAction, None, None, client, Some(what))
            .await;
        Ok(self.backend.get(name).await?)
    }

    /// Registers an external console. Unix sockets must pass the confinement rules.
    pub async fn create_target(&self, t: TargetSpec) -> Result<Target, EngineError> {
        crate::model::links::validate_name("name", &t.name)?;
        if t.kind == ConsoleType::Serial {
            return Err(EngineError::Invalid(
                "kind `serial` is a VM's serial port; an external byte stream is `raw`".into(),
            ));
        }
        let address = match (t.address, t.socket) {
            (Some(a), None) => TargetAddress::Tcp(a),
            (None, Some(p)) => {
                self.confinement
                    .check(&p)
                    .map_err(|e| EngineError::Invalid(e.to_string()))?;
                TargetAddress::Unix(p)
            }
            _ => {
                return Err(EngineError::Invalid(
                    "give exactly one of address (host:port) or socket (an absolute path)".into(),
                ))
            }
        };
        if let TargetAddress::Tcp(_) = &address {
            address
                .validate()
                .map_err(|_| EngineError::Invalid("address must be host:port".into()))?;
        }
        if self.backend.get(&t.name).await.is_ok() {
            return Err(EngineError::Conflict(format!("a VM is named {:?}", t.name)));
        }
        let target = Target {
            name: t.name,
            kind: t.kind,
            address,
            vnc_password: t.vnc_password,
            created_at: OffsetDateTime::now_utc(),
        };
        let stored = self.store.put_target(&target).await;
        self.targets.invalidate(target.name.as_str());
        stored.map_err(|e| match e {
            StoreError::Duplicate(_) => {
                EngineError::Conflict("a target with this name exists".into())
            }
            other => other.into(),
        })?;
        Ok(target)
    }

    pub async fn list_targets(&self) -> Result<Vec<Target>, EngineError> {
        Ok(self.store.list_targets().await?)
    }

    pub async fn delete_target(&self, name: &str) -> Result<(), EngineError> {
        let deleted = self.store.delete_target(name).await;
        self.targets.invalidate(name);
        if deleted? {
            Ok(())
        } else {
            Err(EngineError::NotFound)
        }
    }

    /// The newest audit records (at most 1000), of one link or all.
    pub async fn audit_log(&self, link: Option<&str>) -> Result<Vec<AuditEvent>, EngineError> {
        Ok(self.store.list_audit(link, 1000).await?)
    }
}
