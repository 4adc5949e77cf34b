//! The administrator's JSON API on the admin listener (bearer tokens), plus `/healthz`
//! and `/metrics`. Routes are data: each names its operation, and each operation is
//! one line here calling the engine.

use std::net::IpAddr;
use std::sync::Arc;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use vmm_backend::net::BondMode;
use vmm_backend::PowerAction;

use super::{json_ok, parse_json, read_body, ApiError, Body, ConnInfo, Route, Site};
use crate::engine::App;

/// The admin API's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Healthz,
    Metrics,
    OpenApi,
    CreateLink,
    ListLinks,
    GetLink,
    RevokeLink,
    LinkSessions,
    ListSessions,
    KillSession,
    ListVms,
    GetVm,
    VmAction,
    CreateTarget,
    ListTargets,
    DeleteTarget,
    Audit,
    VmIp,
    ListSwitches,
    CreateSwitch,
    GetSwitch,
    DeleteSwitch,
    ListBonds,
    CreateBond,
    GetBond,
    SetBondMode,
    DeleteBond,
    ListNics,
    AddNic,
    RemoveNic,
    Screenshot,
    UpdateVm,
    ListRecordings,
    GetRecording,
    RecordingFile,
    DeleteRecording,
}

impl Op {
    /// Operations that answer without a bearer token.
    fn is_public(self) -> bool {
        matches!(self, Op::Healthz | Op::OpenApi)
    }
}

/// The admin listener's routes. The OpenAPI document lists exactly these (tested).
pub const ROUTES: &[Route<Op>] = &[
    Route::new("GET", "/healthz", Op::Healthz),
    Route::new("GET", "/metrics", Op::Metrics),
    Route::new("GET", "/api/v1/openapi.json", Op::OpenApi),
    Route::new("POST", "/api/v1/links", Op::CreateLink),
    Route::new("GET", "/api/v1/links", Op::ListLinks),
    Route::new("GET", "/api/v1/links/{id}", Op::GetLink),
    Route::new("DELETE", "/api/v1/links/{id}", Op::RevokeLink),
    Route::new("GET", "/api/v1/links/{id}/sessions", Op::LinkSessions),
    Route::new("GET", "/api/v1/sessions", Op::ListSessions),
    Route::new("DELETE", "/api/v1/sessions/{id}", Op::KillSession),
    Route::new("GET", "/api/v1/vms", Op::ListVms),
    Route::new("GET", "/api/v1/vms/{name}", Op::GetVm),
    Route::new("POST", "/api/v1/vms/{name}/actions/{action}", Op::VmAction),
    Route::new("POST", "/api/v1/targets", Op::CreateTarget),
    Route::new("GET", "/api/v1/targets", Op::ListTargets),
    Route::new("DELETE", "/api/v1/targets/{name}", Op::DeleteTarget),
    Route::new("GET", "/api/v1/audit", Op::Audit),
    Route::new("GET", "/api/v1/vms/{name}/ip", Op::VmIp),
    Route::new("GET", "/api/v1/vswitches", Op::ListSwitches),
    Route::new("POST", "/api/v1/vswitches", Op::CreateSwitch),
    Route::new("GET", "/api/v1/vswitches/{name}", Op::GetSwitch),
    Route::new("DELETE", "/api/v1/vswitches/{name}", Op::DeleteSwitch),
    Route::new("GET", "/api/v1/bonds", Op::ListBonds),
    Route::new("POST", "/api/v1/bonds", Op::CreateBond),
    Route::new("GET", "/api/v1/bonds/{name}", Op::GetBond),
    Route::new("PATCH", "/api/v1/bonds/{name}", Op::SetBondMode),
    Route::new("DELETE", "/api/v1/bonds/{name}", Op::DeleteBond),
    Route::new("GET", "/api/v1/vms/{name}/nics", Op::ListNics),
    Route::new("POST", "/api/v1/vms/{name}/nics", Op::AddNic),
    Route::new("DELETE", "/api/v1/vms/{name}/nics/{id}", Op::RemoveNic),
    Route::new("GET", "/api/v1/vms/{name}/screenshot", Op::Screenshot),
    Route::new("PATCH", "/api/v1/vms/{name}", Op::UpdateVm),
    Route::new("GET", "/api/v1/recordings", Op::ListRecordings),
    Route::new("GET", "/api/v1/recordings/{id}", Op::GetRecording),
    Route::new("GET", "/api/v1/recordings/{id}/file", Op::RecordingFile),
    Route::new("DELETE", "/api/v1/recordings/{id}", Op::DeleteRecording),
];

pub async fn handle(site: Arc<Site>, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
    let tls = conn.tls;
    super::finish(dispatch(&site, req, conn).await, tls)
}

async fn authorize(app: &App, req: &Request<Incoming>) -> Result<(), ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized("bearer_token_required"))?;
    Ok(app.check_admin_token(token).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BondModeRequest {
    mode: BondMode,
}

/// `PATCH /api/v1/vms/{name}`: the VM settings that may change on a defined VM.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmUpdate {
    /// Absent: unchanged; a layout name; or null for none (the pages assume `en-us`).
    #[serde(default, deserialize_with = "present")]
    keyboard_layout: Option<Option<vmm_backend::keyboard::KeyboardLayout>>,
}

/// A field that is present (even as null) becomes `Some`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

async fn dispatch(
    site: &Site,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Result<Response<Body>, ApiError> {
    super::check_framing(req.headers())?;
    let path = req.uri().path().to_owned();
    // The admin web console and its files (it logs in with an admin token).
    let (op, params) =
        match super::route_or_page(ROUTES, req.method(), &path, &site.assets, |p| match p {
            "/" => Some("admin.html"),
            p => p.strip_prefix("/admin/"),
        })? {
            super::Dispatch::Route(op, params) => (op, params),
            super::Dispatch::Page(r) => return Ok(r),
        };
    let app = &site.app;
    if !op.is_public() {
        authorize(app, &req).await?;
    }
    let call = Call {
        app,
        params: &params,
        client: Some(conn.peer.ip()),
        max_body: app.config().limits.max_body_bytes,
    };
    call.run(op, req).await
}

/// One admin request: the engine, the path parameters and who asked.
struct Call<'a> {
    app: &'a App,
    params: &'a [&'a str],
    client: Option<IpAddr>,
    max_body: usize,
}

impl Call<'_> {
    /// Path parameter `i` (the route table guarantees it).
    fn p(&self, i: usize) -> Result<&str, ApiError> {
        self.params.get(i).copied().ok_or(ApiError::NotFound)
    }

    async fn body<T: serde::de::DeserializeOwned>(
        &self,
        req: Request<Incoming>,
    ) -> Result<T, ApiError> {
        parse_json(&read_body(req, self.max_body).await?)
    }

    async fn run(self, op: Op, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let (app, client) = (self.app, self.client);
        let ok = StatusCode::OK;
        match op {
            Op::Healthz => json_ok(ok, &serde_json::json!({"status": "ok"})),
            Op::Metrics => Ok(text(app.metrics_text(), "text/plain; version=0.0.4")),
            Op::OpenApi => json_ok(ok, &super::openapi::document()),
            Op::CreateLink => {
                let created = app.create_link(self.body(req).await?, client).await?;
                json_ok(StatusCode::CREATED, &created)
            }
            Op::ListLinks => json_ok(ok, &app.list_links().await?),
            Op::GetLink => json_ok(ok, &app.link_detail(self.p(0)?).await?),
            Op::RevokeLink => json_ok(ok, &app.revoke_link(self.p(0)?, client).await?),
            Op::LinkSessions => json_ok(ok, &app.link_sessions(self.p(0)?).await?),
            Op::ListSessions => json_ok(ok, &app.list_sessions()),
            Op::KillSession => {
                app.kill_session(self.p(0)?, client).await?;
                Ok(super::empty(StatusCode::NO_CONTENT))
            }
            Op::ListVms => json_ok(ok, &app.list_vms().await?),
            Op::GetVm => json_ok(ok, &app.get_vm(self.p(0)?).await?),
            Op::VmAction => {
                let action: PowerAction = self.p(1)?.parse().map_err(ApiError::BadRequest)?;
                json_ok(ok, &app.vm_power(self.p(0)?, action, client).await?)
            }
            Op::CreateTarget => json_ok(
                StatusCode::CREATED,
                &app.create_target(self.body(req).await?).await?,
            ),
            Op::ListTargets => json_ok(ok, &app.list_targets().await?),
            Op::DeleteTarget => {
                app.delete_target(self.p(0)?).await?;
                Ok(super::empty(StatusCode::NO_CONTENT))
            }
            Op::Audit => super::recordings::audit(app, req.uri().query().unwrap_or("")).await,
            Op::VmIp => json_ok(ok, &app.guest_addresses(self.p(0)?).await?),
            Op::ListSwitches => json_ok(ok, &app.list_switches()?),
            Op::CreateSwitch => json_ok(
                StatusCode::CREATED,
                &app.create_switch(self.body(req).await?).await?,
            ),
            Op::GetSwitch => json_ok(ok, &app.get_switch(self.p(0)?)?),
            Op::DeleteSwitch => {
                app.delete_switch(self.p(0)?).await?;
                Ok(super::empty(StatusCode::NO_CONTENT))
            }
            Op::ListBonds => json_ok(ok, &app.list_bonds()?),
            Op::CreateBond => json_ok(
                StatusCode::CREATED,
                &app.create_bond(self.body(req).await?).await?,
            ),
            Op::GetBond => json_ok(ok, &app.bond_status(self.p(0)?).await?),
            Op::SetBondMode => {
                let r: BondModeRequest = self.body(req).await?;
                json_ok(ok, &app.set_bond_mode(self.p(0)?, r.mode).await?)
            }
            Op::DeleteBond => {
                app.delete_bond(self.p(0)?).await?;
                Ok(super::empty(StatusCode::NO_CONTENT))
            }
            Op::ListNics => json_ok(ok, &app.vm_nics(self.p(0)?).await?),
            Op::AddNic => {
                let nic = self.body(req).await?;
                json_ok(
                    StatusCode::CREATED,
                    &app.add_nic(self.p(0)?, nic, client).await?,
                )
            }
            Op::RemoveNic => json_ok(ok, &app.remove_nic(self.p(0)?, self.p(1)?, client).await?),
            Op::Screenshot => Ok(bytes(app.screenshot(self.p(0)?).await?, "image/png")),
            Op::UpdateVm => {
                let r: VmUpdate = self.body(req).await?;
                let info = match r.keyboard_layout {
                    Some(layout) => app.set_keyboard_layout(self.p(0)?, layout, client).await?,
                    None => app.get_vm(self.p(0)?).await?,
                };
                json_ok(ok, &info)
            }
            Op::ListRecordings => {
                super::recordings::list(app, req.uri().query().unwrap_or("")).await
            }
            Op::GetRecording => json_ok(ok, &app.get_recording(self.p(0)?).await?),
            Op::RecordingFile => super::recordings::download(app, self.p(0)?).await,
            Op::DeleteRecording => {
                app.delete_recording(self.p(0)?, client).await?;
                Ok(super::empty(StatusCode::NO_CONTENT))
            }
        }
    }
}

fn text(body: String, content_type: &'static str) -> Response<Body> {
    bytes(body.into_bytes(), content_type)
}

fn bytes(body: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(super::error::full(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}
