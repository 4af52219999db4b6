//! Tower layers of the request path, one per file. `app::router` assembles
//! them and documents their order.

pub mod auth;
pub mod jwt;
pub mod observe;
pub mod shed;
