//! The admin page: `static/` embedded in the binary at build time and served at `/`.
//!
//! Plain ES modules and one stylesheet, no build step and nothing loaded from elsewhere. Served
//! with its content type, `nosniff`, a strict same-origin Content-Security-Policy (the page has
//! no inline script or style) and `no-cache`, so a new binary's page is picked up at once.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

/// One embedded file.
struct Asset {
    /// Paths it is served at.
    paths: &'static [&'static str],
    /// Content type.
    content_type: &'static str,
    /// Bytes.
    body: &'static [u8],
}

/// Content type of the page's modules.
const JS: &str = "text/javascript; charset=utf-8";

/// An ES module of the page, served at `/static/<file>`.
macro_rules! module {
    ($file:literal) => {
        Asset {
            paths: &[concat!("/static/", $file)],
            content_type: JS,
            body: include_bytes!(concat!("../../static/", $file)),
        }
    };
}

/// Every embedded file.
const ASSETS: &[Asset] = &[
    Asset {
        paths: &["/", "/index.html", "/static/index.html"],
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../static/index.html"),
    },
    Asset { paths: &["/app.js", "/static/app.js"], content_type: JS, body: include_bytes!("../../static/app.js") },
    module!("api.js"),
    module!("dom.js"),
    module!("format.js"),
    module!("jobs.js"),
    module!("editor.js"),
    module!("runs.js"),
    module!("workers.js"),
    module!("history.js"),
    module!("alerts.js"),
    module!("charts.js"),
    Asset {
        paths: &["/app.css", "/static/app.css"],
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../static/app.css"),
    },
    Asset {
        paths: &["/favicon.svg", "/static/favicon.svg"],
        content_type: "image/svg+xml",
        body: include_bytes!("../../static/favicon.svg"),
    },
];

/// The page's Content-Security-Policy.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Whether `path` is an embedded file (served without a token).
pub(crate) fn is_asset_path(path: &str) -> bool {
    ASSETS.iter().any(|a| a.paths.contains(&path))
}

/// Registers a GET route for every path of every embedded file.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    for asset in ASSETS {
        for path in asset.paths {
            let (content_type, body) = (asset.content_type, asset.body);
            cfg.route(
                path,
                web::get().to(move || async move {
                    HttpResponse::Ok()
                        .content_type(content_type)
                        .insert_header((header::CACHE_CONTROL, "no-cache"))
                        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
                        .insert_header((header::REFERRER_POLICY, "no-referrer"))
                        .body(body)
                }),
            );
        }
    }
}
