//! The perimeter guard (README "Security: the perimeter"): which requests may reach a handler at
//! all, whatever the token.
//!
//! Owns: the `Host` allow-list (defeats DNS rebinding: a page on `rebind.evil.example` that
//! resolves to 127.0.0.1 still sends `Host: rebind.evil.example`) and the cross-origin rule for
//! state changes (a browser on another origin can send simple requests with the operator's
//! network position; `Origin` and `Sec-Fetch-Site` say so). [`decide`] is the pure decision,
//! [`perimeter`] the middleware that applies it on every listener.
//! Leaves to others: authentication (`auth.rs`), the response headers (`headers.rs`), and which
//! methods a route answers (the route table: GET routes never change anything).

use std::net::{IpAddr, SocketAddr};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::ResponseError;

use super::error::{ApiError, ErrorCode};
use super::AppState;

/// What the guard knows about this server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Perimeter<'a> {
    /// Extra host names (or addresses) `Host` may carry (`http.allowed_hosts`).
    pub(crate) allowed_hosts: &'a [String],
    /// The listen address.
    pub(crate) listen: Option<SocketAddr>,
}

/// The parts of a request the guard looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFacts<'a> {
    /// Method.
    pub(crate) method: &'a Method,
    /// `Host` header (or the URI authority of an HTTP/2 request); `None` when absent.
    pub(crate) host: Option<&'a str>,
    /// `Origin` header.
    pub(crate) origin: Option<&'a str>,
    /// `Sec-Fetch-Site` header.
    pub(crate) fetch_site: Option<&'a str>,
}

/// Why the guard refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// `Host` is not one of this server's names.
    #[error("Host {0:?} is not a name of this server; add it to http.allowed_hosts if it is")]
    HostNotAllowed(String),
    /// A state change from another browser origin.
    #[error("state changes are refused from another origin ({0})")]
    CrossOrigin(String),
}

impl Refusal {
    fn to_api_error(&self) -> ApiError {
        match self {
            Self::HostNotAllowed(_) => ApiError::new(ErrorCode::HostNotAllowed, self.to_string()),
            Self::CrossOrigin(_) => ApiError::new(ErrorCode::CrossOriginRefused, self.to_string()),
        }
    }
}

/// Whether `method` may change state (everything but GET and HEAD: those never do here).
pub(crate) fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// The decision: `Host` must be a name of this server (every method); a state change must not
/// come from another origin (`Origin` present and not ours, or `Sec-Fetch-Site` `cross-site` or
/// `same-site`: a same-site request is still from another origin, e.g. another loopback port).
///
/// # Errors
/// The [`Refusal`].
pub(crate) fn decide(perimeter: &Perimeter<'_>, req: &RequestFacts<'_>) -> Result<(), Refusal> {
    // No Host at all is no browser (HTTP/1.0 tools); a browser always sends one.
    let own = match req.host {
        Some(raw) => {
            let host = Authority::parse(raw).ok_or_else(|| Refusal::HostNotAllowed(raw.to_owned()))?;
            if !host_allowed(perimeter, &host.host) {
                return Err(Refusal::HostNotAllowed(raw.to_owned()));
            }
            Some(host)
        }
        None => None,
    };
    if !changes_state(req.method) {
        return Ok(());
    }
    if let Some(site) = req.fetch_site.map(str::trim) {
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Err(Refusal::CrossOrigin(format!("Sec-Fetch-Site: {site}")));
        }
    }
    if let Some(origin) = req.origin.map(str::trim) {
        let theirs = parse_origin(origin);
        // Scheme aside: behind a TLS-terminating proxy we see http while the page is https; no
        // other server can serve a page from our own host and port.
        let same = matches!((&theirs, &own), (Some(o), Some(h)) if o.same_place(h));
        if !same {
            return Err(Refusal::CrossOrigin(format!("Origin: {origin}")));
        }
    }
    Ok(())
}

/// Loopback names and addresses, the listen address, any address when listening on all of them
/// (an address literal cannot be rebound), and `http.allowed_hosts`.
fn host_allowed(perimeter: &Perimeter<'_>, host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        let listen = perimeter.listen.map(|a| a.ip());
        if ip.is_loopback() || listen == Some(ip) || listen.is_some_and(|l| l.is_unspecified()) {
            return true;
        }
    }
    perimeter.allowed_hosts.iter().any(|allowed| Authority::parse(allowed).is_some_and(|a| a.host == host))
}

/// A host and port, normalized: lowercase, no trailing dot, IPv6 without brackets, the port
/// `None` when absent or the scheme's default.
#[derive(Debug, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    /// `host`, `host:port`, `[v6]`, `[v6]:port`.
    fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
            let (v6, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?.parse::<u16>().ok()?),
            };
            (v6.to_owned(), port)
        } else {
            match raw.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p.parse::<u16>().ok()?)),
                None => (raw.to_owned(), None),
            }
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let valid =
            !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        valid.then_some(Self { host, port })
    }

    /// Same host, and same port once default ports (80, 443) are taken as "none given".
    fn same_place(&self, other: &Self) -> bool {
        let port = |p: Option<u16>| p.filter(|p| *p != 80 && *p != 443);
        self.host == other.host && port(self.port) == port(other.port)
    }
}

/// `scheme://host[:port]` of an `Origin` header (`null` and other schemes are no origin of ours).
fn parse_origin(origin: &str) -> Option<Authority> {
    let (scheme, rest) = origin.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") || rest.contains('/') {
        return None;
    }
    Authority::parse(rest)
}

/// The middleware: refuses with 421 `host_not_allowed` or 403 `cross_origin_refused` (the API
/// error body on every route, the seed's included: the refusal must be unmistakable).
pub(crate) async fn perimeter(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let config = req.app_data::<Data<AppState>>().map(|s| std::sync::Arc::clone(&s.config));
    let (allowed, listen) = match &config {
        Some(c) => (c.http.allowed_hosts.as_slice(), c.listen_addr()),
        None => (&[][..], None),
    };
    let text = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    // A non-ASCII header value is not a name of ours: map it to something that is refused.
    let host = match req.headers().get(header::HOST) {
        Some(v) => Some(v.to_str().unwrap_or("\u{fffd}")),
        None => req.uri().authority().map(|a| a.as_str()),
    };
    let origin = match req.headers().get(header::ORIGIN) {
        Some(v) => Some(v.to_str().unwrap_or("null")),
        None => None,
    };
    let facts = RequestFacts {
        method: req.method(),
        host,
        origin,
        fetch_site: text(header::HeaderName::from_static("sec-fetch-site")),
    };
    let decision = decide(&Perimeter { allowed_hosts: allowed, listen }, &facts);
    match decision {
        Ok(()) => next.call(req).await.map(ServiceResponse::map_into_boxed_body),
        Err(refusal) => {
            log::info!(
                "Request refused at the perimeter. method={} path={} reason={}",
                req.method(),
                req.path(),
                match &refusal {
                    Refusal::HostNotAllowed(_) => "host_not_allowed",
                    Refusal::CrossOrigin(_) => "cross_origin_refused",
                }
            );
            let res = refusal.to_api_error().error_response();
            Ok(req.into_response(res).map_into_boxed_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(
        method: &'a Method,
        host: &'a str,
        origin: Option<&'a str>,
        site: Option<&'a str>,
    ) -> RequestFacts<'a> {
        RequestFacts { method, host: Some(host), origin, fetch_site: site }
    }

    fn loopback() -> Perimeter<'static> {
        Perimeter { allowed_hosts: &[], listen: "127.0.0.1:8070".parse().ok() }
    }

    #[test]
    fn loopback_names_and_the_listen_address_are_hosts_of_ours() {
        let p = loopback();
        for host in ["127.0.0.1:8070", "localhost:8070", "LOCALHOST.", "[::1]:8070", "127.0.0.2", "app.localhost:1"] {
            assert_eq!(decide(&p, &facts(&Method::GET, host, None, None)), Ok(()), "{host}");
        }
        for host in ["evil.example", "rebind.evil.example:8070", "10.0.0.1:8070", "", "a b", "127.0.0.1:x"] {
            assert!(
                matches!(decide(&p, &facts(&Method::GET, host, None, None)), Err(Refusal::HostNotAllowed(_))),
                "{host}"
            );
        }
    }

    #[test]
    fn allowed_hosts_and_any_address_on_a_wildcard_listener() {
        let allowed = vec!["cron.example.com".to_owned(), "[fd00::5]".to_owned()];
        let p = Perimeter { allowed_hosts: &allowed, listen: "0.0.0.0:8070".parse().ok() };
        for host in ["cron.example.com:8070", "CRON.example.com", "10.0.0.7:8070", "[fd00::5]:1"] {
            assert_eq!(decide(&p, &facts(&Method::GET, host, None, None)), Ok(()), "{host}");
        }
        assert!(decide(&p, &facts(&Method::GET, "other.example.com", None, None)).is_err());
        let p = Perimeter { allowed_hosts: &allowed, listen: "10.0.0.7:8070".parse().ok() };
        assert_eq!(decide(&p, &facts(&Method::GET, "10.0.0.7:8070", None, None)), Ok(()));
        assert!(decide(&p, &facts(&Method::GET, "10.0.0.8:8070", None, None)).is_err());
    }

    #[test]
    fn state_changes_from_another_origin_are_refused() {
        let p = loopback();
        let host = "127.0.0.1:8070";
        let cross = |m: &Method, origin: Option<&str>, site: Option<&str>| {
            matches!(decide(&p, &facts(m, host, origin, site)), Err(Refusal::CrossOrigin(_)))
        };
        assert!(cross(&Method::POST, Some("https://evil.example"), Some("cross-site")));
        assert!(cross(&Method::POST, Some("https://evil.example"), None));
        assert!(cross(&Method::POST, None, Some("cross-site")));
        assert!(cross(&Method::DELETE, Some("http://127.0.0.1:9999"), Some("same-site")), "another loopback port");
        assert!(cross(&Method::PUT, Some("null"), None), "sandboxed frames send Origin: null");
        assert!(cross(&Method::PATCH, Some("http://127.0.0.1:8070/x"), None));
        assert!(cross(&Method::POST, Some("file://"), None));
        // ours
        assert_eq!(decide(&p, &facts(&Method::POST, host, Some("http://127.0.0.1:8070"), Some("same-origin"))), Ok(()));
        assert_eq!(decide(&p, &facts(&Method::POST, host, Some("https://127.0.0.1:8070"), None)), Ok(()));
        assert_eq!(decide(&p, &facts(&Method::POST, host, None, Some("none"))), Ok(()), "typed URL / tools");
        assert_eq!(decide(&p, &facts(&Method::POST, host, None, None)), Ok(()), "curl");
        assert_eq!(
            decide(&p, &facts(&Method::POST, "localhost", Some("https://localhost:443"), None)),
            Ok(()),
            "default ports"
        );
        // reads are never state changes: a cross-site GET may read nothing without the token,
        // and changes nothing with it
        assert_eq!(decide(&p, &facts(&Method::GET, host, Some("https://evil.example"), Some("cross-site"))), Ok(()));
    }

    #[test]
    fn an_origin_needs_a_host_to_compare_with() {
        let p = loopback();
        let no_host =
            RequestFacts { method: &Method::POST, host: None, origin: Some("http://127.0.0.1:8070"), fetch_site: None };
        assert!(matches!(decide(&p, &no_host), Err(Refusal::CrossOrigin(_))));
        let no_host = RequestFacts { origin: None, ..no_host };
        assert_eq!(decide(&p, &no_host), Ok(()));
    }
}
