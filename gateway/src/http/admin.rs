//! The administrator's JSON API on the admin listener (bearer tokens), plus `/healthz`
//! and `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use vmm_backend::net::{BondMode, BondRequest, SwitchRequest};
use vmm_backend::nic::NicRequest;
use vmm_backend::PowerAction;

use super::{json_ok, parse_json, read_body, ApiError, Body, Route};
use crate::app::App;
use crate::links::{ConsoleType, LinkRequest};
use crate::server::ConnInfo;
use crate::sessions::EndReason;
use crate::store::{AuditKind, Target, TargetAddress};

/// The admin listener's routes. The OpenAPI document lists exactly these (tested).
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        pattern: "/healthz",
    },
    Route {
        method: "GET",
        pattern: "/metrics",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/openapi.json",
    },
    Route {
        method: "POST",
        pattern: "/api/v1/links",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/links",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/links/{id}",
    },
    Route {
        method: "DELETE",
        pattern: "/api/v1/links/{id}",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/links/{id}/sessions",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/sessions",
    },
    Route {
        method: "DELETE",
        pattern: "/api/v1/sessions/{id}",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/vms",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/vms/{name}",
    },
    Route {
        method: "POST",
        pattern: "/api/v1/vms/{name}/actions/{action}",
    },
    Route {
        method: "POST",
        pattern: "/api/v1/targets",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/targets",
    },
    Route {
        method: "DELETE",
        pattern: "/api/v1/targets/{name}",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/audit",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/vms/{name}/ip",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/vswitches",
    },
    Route {
        method: "POST",
        pattern: "/api/v1/vswitches",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/vswitches/{name}",
    },
    Route {
        method: "DELETE",
        pattern: "/api/v1/vswitches/{name}",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/bonds",
    },
    Route {
        method: "POST",
        pattern: "/api/v1/bonds",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/bonds/{name}",
    },
    Route {
        method: "PATCH",
        pattern: "/api/v1/bonds/{name}",
    },
    Route {
        method: "DELETE",
        pattern: "/api/v1/bonds/{name}",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/vms/{name}/nics",
    },
    Route {
        method: "POST",
        pattern: "/api/v1/vms/{name}/nics",
    },
    Route {
        method: "DELETE",
        pattern: "/api/v1/vms/{name}/nics/{id}",
    },
    Route {
        method: "GET",
        pattern: "/api/v1/vms/{name}/screenshot",
    },
];

/// Routes that answer without a bearer token.
const PUBLIC: &[usize] = &[0, 2];

pub async fn handle(app: Arc<App>, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
    super::finish(dispatch(&app, req, conn).await, conn.tls)
}

async fn authorize(app: &App, req: &Request<Incoming>) -> Result<(), ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized("bearer_token_required"))?;
    match app.store.check_admin_token(token).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::Unauthorized("invalid_token")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BondModeRequest {
    mode: BondMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetRequest {
    name: String,
    kind: ConsoleType,
    /// `host:port` for TCP.
    #[serde(default)]
    address: Option<String>,
    /// A unix socket path.
    #[serde(default)]
    socket: Option<std::path::PathBuf>,
    #[serde(default)]
    vnc_password: Option<crate::secret::Secret>,
}

async fn dispatch(
    app: &Arc<App>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Result<Response<Body>, ApiError> {
    super::check_framing(req.headers())?;
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    // The admin web console and its files (it logs in with an admin token).
    let (idx, params) =
        match super::route_or_page(ROUTES, req.method(), &path, &app.assets, |p| match p {
            "/" => Some("admin.html"),
            p => p.strip_prefix("/admin/"),
        })? {
            super::Dispatch::Route(i, params) => (i, params),
            super::Dispatch::Page(r) => return Ok(r),
        };
    if !PUBLIC.contains(&idx) {
        authorize(app, &req).await?;
    }
    let client = Some(conn.peer.ip());
    let max_body = app.cfg.limits.max_body_bytes;
    let net = app.backend.network();
    match (idx, params.as_slice()) {
        (0, []) => Ok(super::error::json_response(
            StatusCode::OK,
            &json!({"status": "ok"}),
        )),
        (1, []) => {
            let text = app.metrics.render(
                app.sessions.count(),
                app.open_public_conns.load(Ordering::Relaxed),
            );
            let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(text)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(r)
        }
        (2, []) => Ok(super::error::json_response(
            StatusCode::OK,
            &super::openapi::document(),
        )),
        (3, []) => {
            let body = read_body(req, max_body).await?;
            let lr: LinkRequest = parse_json(&body)?;
            let created = app.create_link(lr, client).await?;
            json_ok(StatusCode::CREATED, &created)
        }
        (4, []) => {
            let links = app.store.list_links().await?;
            let out: Vec<_> = links
                .into_iter()
                .map(|l| {
                    let live = app.sessions.count_for(&l.id);
                    let mut v = serde_json::to_value(&l).unwrap_or_default();
                    v["live_sessions"] = json!(live);
                    if let Ok((url, _)) = app.link_url(&l) {
                        v["url"] = json!(url);
                    }
                    v
                })
                .collect();
            json_ok(StatusCode::OK, &out)
        }
        (5, [id]) => {
            let link = app.store.get_link(id).await?.ok_or(ApiError::NotFound)?;
            let mut v =
                serde_json::to_value(&link).map_err(|e| ApiError::Internal(e.to_string()))?;
            v["sessions"] = serde_json::to_value(app.sessions.list(Some(id))).unwrap_or_default();
            v["live_sessions"] = json!(app.sessions.count_for(id));
            let (url, token) = app.link_url(&link)?;
            v["url"] = json!(url);
            v["token"] = json!(token);
            json_ok(StatusCode::OK, &v)
        }
        (6, [id]) => {
            let link = app.revoke_link(id, client).await?;
            json_ok(StatusCode::OK, &link)
        }
        (7, [id]) => {
            app.store.get_link(id).await?.ok_or(ApiError::NotFound)?;
            json_ok(StatusCode::OK, &app.sessions.list(Some(id)))
        }
        (8, []) => json_ok(StatusCode::OK, &app.sessions.list(None)),
        (9, [id]) => {
            let s = app.sessions.get(id).ok_or(ApiError::NotFound)?;
            app.sessions.end(id, EndReason::Killed);
            app.audit(
                AuditKind::SessionKilled,
                Some(&s.link_id),
                Some(id),
                client,
                None,
            )
            .await;
            Ok(super::empty(StatusCode::NO_CONTENT))
        }
        (10, []) => json_ok(StatusCode::OK, &app.backend.list().await?),
        (11, [name]) => json_ok(StatusCode::OK, &app.backend.get(name).await?),
        (12, [name, action]) => {
            let action: PowerAction = action.parse().map_err(ApiError::BadRequest)?;
            let info = app.backend.power(name, action).await?;
            app.audit(
                AuditKind::VmAction,
                None,
                None,
                client,
                Some(format!("admin {action:?} {name}")),
            )
            .await;
            json_ok(StatusCode::OK, &info)
        }
        (13, []) => {
            let body = read_body(req, max_body).await?;
            let t: TargetRequest = parse_json(&body)?;
            crate::links::validate_name("name", &t.name)?;
            let address = match (t.address, t.socket) {
                (Some(a), None) => {
                    if a.parse::<std::net::SocketAddr>().is_err()
                        && !a
                            .rsplit_once(':')
                            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                    {
                        return Err(ApiError::BadRequest("address must be host:port".into()));
                    }
                    TargetAddress::Tcp(a)
                }
                (None, Some(p)) => {
                    app.confinement
                        .check(&p)
                        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                    TargetAddress::Unix(p)
                }
                _ => {
                    return Err(ApiError::BadRequest(
                        "give exactly one of address (host:port) or socket (an absolute path)"
                            .into(),
                    ))
                }
            };
            if app.backend.get(&t.name).await.is_ok() {
                return Err(ApiError::Conflict(format!("a VM is named {:?}", t.name)));
            }
            let target = Target {
                name: t.name,
                kind: t.kind,
                address,
                vnc_password: t.vnc_password,
                created_at: time::OffsetDateTime::now_utc(),
            };
            app.store.put_target(&target).await.map_err(|e| match e {
                crate::store::StoreError::Duplicate(_) => {
                    ApiError::Conflict("a target with this name exists".into())
                }
                other => other.into(),
            })?;
            json_ok(StatusCode::CREATED, &target)
        }
        (14, []) => json_ok(StatusCode::OK, &app.store.list_targets().await?),
        (15, [name]) => {
            if app.store.delete_target(name).await? {
                Ok(super::empty(StatusCode::NO_CONTENT))
            } else {
                Err(ApiError::NotFound)
            }
        }
        (16, []) => {
            let link = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "link")
                .map(|(_, v)| v.to_owned());
            let events = app.store.list_audit(link.as_deref(), 1000).await?;
            json_ok(StatusCode::OK, &events)
        }
        (17, [name]) => json_ok(StatusCode::OK, &app.backend.guest_addresses(name).await?),
        (18, []) => json_ok(StatusCode::OK, &net.list_switches()?),
        (19, []) => {
            let req: SwitchRequest = parse_json(&read_body(req, max_body).await?)?;
            json_ok(StatusCode::CREATED, &net.create_switch(req).await?)
        }
        (20, [name]) => json_ok(StatusCode::OK, &net.get_switch(name)?),
        (21, [name]) => {
            net.delete_switch(name).await?;
            Ok(super::empty(StatusCode::NO_CONTENT))
        }
        (22, []) => json_ok(StatusCode::OK, &net.list_bonds()?),
        (23, []) => {
            let req: BondRequest = parse_json(&read_body(req, max_body).await?)?;
            json_ok(StatusCode::CREATED, &net.create_bond(req).await?)
        }
        (24, [name]) => json_ok(StatusCode::OK, &net.bond_status(name).await?),
        (25, [name]) => {
            let req: BondModeRequest = parse_json(&read_body(req, max_body).await?)?;
            json_ok(StatusCode::OK, &net.set_bond_mode(name, req.mode).await?)
        }
        (26, [name]) => {
            net.delete_bond(name).await?;
            Ok(super::empty(StatusCode::NO_CONTENT))
        }
        (27, [name]) => json_ok(StatusCode::OK, &app.backend.get(name).await?.spec.nics),
        (28, [name]) => {
            let nic: NicRequest = parse_json(&read_body(req, max_body).await?)?;
            let spec = app.backend.add_nic(name, nic).await?;
            app.audit(
                AuditKind::VmAction,
                None,
                None,
                client,
                Some(format!("admin add nic {} to {name}", spec.id)),
            )
            .await;
            json_ok(StatusCode::CREATED, &spec)
        }
        (29, [name, id]) => {
            let spec = app.backend.remove_nic(name, id).await?;
            app.audit(
                AuditKind::VmAction,
                None,
                None,
                client,
                Some(format!("admin remove nic {id} from {name}")),
            )
            .await;
            json_ok(StatusCode::OK, &spec)
        }
        (30, [name]) => {
            let png = app.backend.screenshot(name).await?;
            let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(png)));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("image/png"),
            );
            h.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            Ok(r)
        }
        _ => Err(ApiError::NotFound),
    }
}
