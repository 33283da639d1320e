//! Operating a device: the views that need no secret and no write access, `config
//! validate --offline/--online`, the uploader's state in the status, signals, and the
//! HTTP endpoint (`/metrics`, `/status`, `/snapshot`).

mod docs;
mod http;
mod reload;
mod states;
mod validate;
mod views;
