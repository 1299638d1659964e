//! Container configuration → route specs, nginx-proxy compatible.
//!
//! The Docker provider (bollard) describes each running container as a plain
//! [`Container`]; this module reads its environment (`VIRTUAL_HOST`,
//! `VIRTUAL_PORT`, ...) and `branchgate.*` labels, labels winning, and turns
//! them into a [`RouteSpec`] with its [`Policy`]. A bad value rejects that
//! one container with an error naming it, the key and the value; every other
//! container is unaffected.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::routes::policy::{parse_acme_hosts, parse_cert_name, parse_size};
use crate::routes::spec::check_path;
use crate::routes::{HostPattern, Hsts, HttpsMethod, Policy, Proto, Role, RouteSpec};

/// What the Docker provider knows about one running container.
#[derive(Clone, Debug, Default)]
pub struct Container {
    /// Full container id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Environment as `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// TCP ports the image or run command exposes.
    pub exposed_ports: Vec<u16>,
    /// The container's address on a network the proxy reaches, if any.
    pub ip: Option<IpAddr>,
}

/// A container whose configuration cannot be routed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("container {container}: {key}={value:?}: {reason}")]
pub struct LabelError {
    /// Container name.
    pub container: String,
    /// The variable or label at fault (`VIRTUAL_PORT`, `branchgate.port`).
    pub key: String,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

/// One setting: its label and its environment variable(s), label first.
struct Setting {
    label: &'static str,
    env: &'static [&'static str],
}

const HOST: Setting = Setting {
    label: "branchgate.host",
    env: &["VIRTUAL_HOST"],
};
const PORT: Setting = Setting {
    label: "branchgate.port",
    env: &["VIRTUAL_PORT"],
};
const PROTO: Setting = Setting {
    label: "branchgate.proto",
    env: &["VIRTUAL_PROTO"],
};
const PATH: Setting = Setting {
    label: "branchgate.path",
    env: &["VIRTUAL_PATH"],
};
const DEST: Setting = Setting {
    label: "branchgate.dest",
    env: &["VIRTUAL_DEST"],
};
const HTTPS_METHOD: Setting = Setting {
    label: "branchgate.https_method",
    env: &["HTTPS_METHOD"],
};
const HSTS: Setting = Setting {
    label: "branchgate.hsts",
    env: &["HSTS"],
};
const CERT_NAME: Setting = Setting {
    label: "branchgate.cert_name",
    env: &["CERT_NAME"],
};
const ACME_HOST: Setting = Setting {
    label: "branchgate.acme_host",
    env: &["LETSENCRYPT_HOST", "ACME_HOST"],
};
const ACME_EMAIL: Setting = Setting {
    label: "branchgate.acme_email",
    env: &["LETSENCRYPT_EMAIL"],
};
const BRANCH: Setting = Setting {
    label: "branchgate.branch",
    env: &[],
};
const ROLE: Setting = Setting {
    label: "branchgate.role",
    env: &[],
};
const CORS: Setting = Setting {
    label: "branchgate.cors",
    env: &[],
};
const TLS: Setting = Setting {
    label: "branchgate.tls",
    env: &[],
};
const AUTH_BASIC: Setting = Setting {
    label: "branchgate.auth.basic",
    env: &[],
};
const ALLOW: Setting = Setting {
    label: "branchgate.allow",
    env: &[],
};
const MAX_BODY: Setting = Setting {
    label: "branchgate.max_body",
    env: &[],
};
const RESPONSE_TIMEOUT: Setting = Setting {
    label: "branchgate.response_timeout",
    env: &[],
};

impl Container {
    fn env_var(&self, key: &str) -> Option<&str> {
        // The last definition wins, as in a shell.
        self.env
            .iter()
            .rev()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// The value of a setting and the key it came from; labels win over env.
    fn get(&self, s: &Setting) -> Option<(String, String)> {
        if let Some(v) = self.labels.get(s.label) {
            return Some((s.label.to_owned(), v.trim().to_owned()));
        }
        s.env.iter().find_map(|k| {
            self.env_var(k)
                .map(|v| ((*k).to_owned(), v.trim().to_owned()))
        })
    }

    fn error(&self, (key, value): (String, String), reason: impl Into<String>) -> LabelError {
        LabelError {
            container: self.name.clone(),
            key,
            value,
            reason: reason.into(),
        }
    }
}

/// The upstream port: `VIRTUAL_PORT`, else the single exposed port, else 80
/// (nginx-proxy's rule; several exposed ports also mean 80).
fn port(c: &Container) -> Result<u16, LabelError> {
    if let Some(kv) = c.get(&PORT) {
        return match kv.1.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(c.error(kv, "not a port number (1-65535)")),
        };
    }
    Ok(match c.exposed_ports.as_slice() {
        [only] => *only,
        _ => 80,
    })
}

/// Reads one container. `Ok(None)`: nothing asks for it to be routed.
pub fn container_route(c: &Container) -> Result<Option<RouteSpec>, LabelError> {
    let host = c.get(&HOST);
    let branch = c.get(&BRANCH);
    if host.is_none() && branch.is_none() {
        return Ok(None);
    }
    let hosts = match host {
        Some(kv) => {
            let hosts = HostPattern::parse_list(&kv.1).map_err(|(bad, e)| {
                let reason = format!("host {bad:?}: {}", crate::logging::chain(&e));
                c.error(kv.clone(), reason)
            })?;
            if hosts.is_empty() {
                return Err(c.error(kv, "no host in the list"));
            }
            hosts
        }
        None => Vec::new(),
    };
    let role = match (branch.is_some(), c.get(&ROLE)) {
        (true, Some(kv)) => Some(kv.1.parse::<Role>().map_err(|e| c.error(kv, e))?),
        (true, None) => {
            let kv = (ROLE.label.to_owned(), String::new());
            return Err(c.error(kv, "a branch container needs a role (frontend or backend)"));
        }
        (false, Some(kv)) => return Err(c.error(kv, "a role needs branchgate.branch")),
        (false, None) => None,
    };
    let port = port(c)?;
    let proto = match c.get(&PROTO) {
        Some(kv) => kv.1.parse::<Proto>().map_err(|e| c.error(kv, e))?,
        None => Proto::Http,
    };
    let path = match c.get(&PATH) {
        Some(kv) if !kv.1.is_empty() => {
            check_path(&kv.1).map_err(|e| c.error(kv.clone(), e))?;
            kv.1
        }
        _ => "/".to_owned(),
    };
    let dest = match c.get(&DEST) {
        Some(kv) if !kv.1.is_empty() => {
            check_path(&kv.1).map_err(|e| c.error(kv.clone(), e))?;
            Some(kv.1)
        }
        _ => None,
    };
    let https_method = match c.get(&HTTPS_METHOD) {
        Some(kv) => Some(kv.1.parse::<HttpsMethod>().map_err(|e| c.error(kv, e))?),
        None => None,
    };
    let hsts = match c.get(&HSTS) {
        Some(kv) if !kv.1.is_empty() => kv.1.parse::<Hsts>().map_err(|e| c.error(kv, e))?,
        _ => Hsts::Default,
    };
    let cert_name = match c.get(&CERT_NAME) {
        Some(kv) => parse_cert_name(&kv.1).map_err(|e| c.error(kv, e))?,
        None => None,
    };
    let mut acme_hosts = match c.get(&ACME_HOST) {
        Some(kv) => parse_acme_hosts(&kv.1).map_err(|e| c.error(kv, e))?,
        None => Vec::new(),
    };
    // `branchgate.tls=acme`: a certificate for the container's exact hosts
    // (wildcard and regex hosts cannot have one without DNS-01).
    if let Some(kv) = c.get(&TLS) {
        match kv.1.to_ascii_lowercase().as_str() {
            "acme" if acme_hosts.is_empty() => {
                let exact: Vec<String> = hosts
                    .iter()
                    .filter_map(|h| match h {
                        HostPattern::Exact(name) => Some(name.to_string()),
                        _ => None,
                    })
                    .collect();
                if exact.is_empty() {
                    return Err(c.error(kv, "acme needs at least one exact host name"));
                }
                acme_hosts = parse_acme_hosts(&exact.join(",")).map_err(|e| c.error(kv, e))?;
            }
            "acme" | "" | "off" => {}
            _ => return Err(c.error(kv, "must be acme or off")),
        }
    }

    let cors = match c.get(&CORS) {
        Some(kv) => match kv.1.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            _ => return Err(c.error(kv, "must be true or false")),
        },
        None => false,
    };

    let basic_auth = match c.get(&AUTH_BASIC) {
        Some(kv) if !kv.1.is_empty() => Some(kv.1.parse().map_err(|e: String| {
            // Never echo the hashes back into a log line.
            let shown = (kv.0.clone(), "(hidden)".to_owned());
            c.error(shown, e)
        })?),
        _ => None,
    };
    let allow = match c.get(&ALLOW) {
        Some(kv) if !kv.1.is_empty() => Some(kv.1.parse().map_err(|e| c.error(kv, e))?),
        _ => None,
    };
    let max_body = match c.get(&MAX_BODY) {
        Some(kv) if !kv.1.is_empty() => parse_size(&kv.1).map_err(|e| c.error(kv, e))?,
        _ => None,
    };
    let response_timeout = match c.get(&RESPONSE_TIMEOUT) {
        Some(kv) if !kv.1.is_empty() => {
            Some(crate::config::parse_timeout(&kv.1).map_err(|e| c.error(kv, e))?)
        }
        _ => None,
    };

    // No address: the route keeps its hosts with no upstream (503); the
    // Docker provider reports why (see `docker::route_for`).
    let upstreams =
        c.ip.map(|ip| vec![SocketAddr::new(ip, port)])
            .unwrap_or_default();
    let role_branch = branch.map(|kv| kv.1).filter(|b| !b.is_empty());
    Ok(Some(RouteSpec {
        source: c.name.clone(),
        hosts,
        path,
        dest,
        proto,
        upstreams,
        branch: role_branch,
        role,
        policy: Policy {
            cors,
            https_method,
            hsts,
            cert_name,
            acme_hosts,
            acme_email: c
                .get(&ACME_EMAIL)
                .map(|kv| kv.1)
                .filter(|v| !v.is_empty())
                .map(Into::into),
            basic_auth,
            allow,
            max_body,
            response_timeout,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(env: &[&str], labels: &[(&str, &str)]) -> Container {
        Container {
            id: "abc123".into(),
            name: "web-1".into(),
            env: env.iter().map(|s| s.to_string()).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            exposed_ports: vec![],
            ip: Some("172.17.0.5".parse().unwrap()),
        }
    }

    fn route(c: &Container) -> RouteSpec {
        container_route(c).unwrap().unwrap()
    }

    #[test]
    fn tls_acme_asks_for_the_exact_hosts_and_letsencrypt_host_wins() {
        let c = container(
            &["VIRTUAL_HOST=b.foo.bar,a.foo.bar,*.x.foo.bar"],
            &[("branchgate.tls", "acme")],
        );
        let hosts = route(&c).policy.acme_hosts;
        assert_eq!(hosts, ["a.foo.bar".into(), "b.foo.bar".into()]);
        let c = container(
            &["VIRTUAL_HOST=a.foo.bar", "LETSENCRYPT_HOST=www.a.foo.bar"],
            &[("branchgate.tls", "acme")],
        );
        let hosts = route(&c).policy.acme_hosts;
        assert_eq!(hosts, ["www.a.foo.bar".into()]);
        for (env, value, reason) in [
            (
                "VIRTUAL_HOST=a.foo.bar",
                "letsencrypt",
                "must be acme or off",
            ),
            ("VIRTUAL_HOST=*.foo.bar", "acme", "at least one exact host"),
        ] {
            let e = container_route(&container(&[env], &[("branchgate.tls", value)])).unwrap_err();
            assert_eq!(e.key, "branchgate.tls");
            assert!(e.reason.contains(reason), "{e:?}");
        }
    }

    #[test]
    fn access_and_limit_labels_parse_or_reject_the_container() {
        let c = container(
            &["VIRTUAL_HOST=a.foo.bar"],
            &[
                (
                    "branchgate.auth.basic",
                    "ann:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
                ),
                ("branchgate.allow", "10.0.0.0/8, 192.168.1.7"),
                ("branchgate.max_body", "10m"),
                ("branchgate.response_timeout", "2s"),
            ],
        );
        let p = route(&c).policy;
        assert_eq!(p.basic_auth.unwrap().to_string(), "users ann");
        assert_eq!(p.allow.unwrap().to_string(), "10.0.0.0/8,192.168.1.7");
        assert_eq!(p.max_body, Some(10 << 20));
        assert_eq!(p.response_timeout, Some(std::time::Duration::from_secs(2)));
        for (key, value, says) in [
            ("branchgate.allow", "10.0.0.0/40", "prefix length"),
            ("branchgate.max_body", "ten", "not a size"),
            ("branchgate.response_timeout", "soon", "not a duration"),
            ("branchgate.auth.basic", "ann", "no `:`"),
        ] {
            let c = container(&["VIRTUAL_HOST=a.foo.bar"], &[(key, value)]);
            let e = container_route(&c).unwrap_err();
            assert_eq!(e.key, key);
            assert!(e.reason.contains(says), "{key}: {e}");
        }
        let c = container(
            &["VIRTUAL_HOST=a.foo.bar"],
            &[("branchgate.auth.basic", "ann:$6$x$y")],
        );
        let e = container_route(&c).unwrap_err();
        assert_eq!(e.value, "(hidden)", "hashes stay out of the warning");
    }

    #[test]
    fn unlabelled_containers_are_not_routed() {
        assert!(
            container_route(&container(&["PATH=/bin"], &[]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn virtual_host_list_and_port_precedence() {
        let mut c = container(&["VIRTUAL_HOST= a.foo.bar , ,*.b.foo.bar,"], &[]);
        let r = route(&c);
        assert_eq!(r.hosts.len(), 2);
        assert_eq!(
            r.upstreams,
            ["172.17.0.5:80".parse().unwrap()],
            "no port exposed: 80"
        );
        c.exposed_ports = vec![3000];
        assert_eq!(
            route(&c).upstreams[0].port(),
            3000,
            "the single exposed port"
        );
        c.exposed_ports = vec![3000, 9229];
        assert_eq!(route(&c).upstreams[0].port(), 80, "several exposed: 80");
        c.env.push("VIRTUAL_PORT=8080".into());
        assert_eq!(route(&c).upstreams[0].port(), 8080, "VIRTUAL_PORT wins");
        c.labels.insert("branchgate.port".into(), "9000".into());
        assert_eq!(
            route(&c).upstreams[0].port(),
            9000,
            "the label wins over env"
        );
    }

    #[test]
    fn labels_win_over_env_for_every_setting() {
        let c = container(
            &[
                "VIRTUAL_HOST=env.foo.bar",
                "VIRTUAL_PROTO=http",
                "VIRTUAL_PATH=/env/",
                "VIRTUAL_DEST=/",
                "HTTPS_METHOD=redirect",
                "LETSENCRYPT_HOST=env.foo.bar",
                "LETSENCRYPT_EMAIL=ops@foo.bar",
                "HSTS=max-age=60",
                "CERT_NAME=env",
            ],
            &[
                ("branchgate.host", "label.foo.bar"),
                ("branchgate.proto", "https"),
                ("branchgate.path", "/label/"),
                ("branchgate.https_method", "nohttp"),
                ("branchgate.cert_name", "shared"),
            ],
        );
        let r = route(&c);
        assert_eq!(r.hosts[0].to_string(), "label.foo.bar");
        assert_eq!(r.proto, Proto::Https);
        assert_eq!(r.path, "/label/");
        assert_eq!(r.dest.as_deref(), Some("/"));
        assert_eq!(r.policy.https_method, Some(HttpsMethod::NoHttp));
        assert_eq!(r.policy.hsts, Hsts::Value("max-age=60".into()));
        assert_eq!(r.policy.cert_name.as_deref(), Some("shared"));
        assert_eq!(r.policy.acme_hosts, [Box::from("env.foo.bar")]);
        assert_eq!(r.policy.acme_email.as_deref(), Some("ops@foo.bar"));
        assert_eq!(r.source, "web-1");
    }

    #[test]
    fn cors_label() {
        let c = container(&["VIRTUAL_HOST=a.b"], &[("branchgate.cors", "TRUE")]);
        assert!(route(&c).policy.cors);
        let c = container(&["VIRTUAL_HOST=a.b"], &[]);
        assert!(!route(&c).policy.cors);
        let c = container(&["VIRTUAL_HOST=a.b"], &[("branchgate.cors", "maybe")]);
        let e = container_route(&c).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.value.as_str()),
            ("branchgate.cors", "maybe")
        );
    }

    #[test]
    fn acme_host_is_an_alias_and_branch_labels_are_carried() {
        let c = container(
            &["ACME_HOST=App.Foo.Bar"],
            &[
                ("branchgate.branch", "feature/Login_v2"),
                ("branchgate.role", "Backend"),
            ],
        );
        let r = route(&c);
        assert_eq!(r.policy.acme_hosts, [Box::from("app.foo.bar")]);
        assert_eq!(r.branch.as_deref(), Some("feature/Login_v2"));
        assert_eq!(r.role, Some(Role::Backend));
        assert!(r.hosts.is_empty());
    }

    #[test]
    fn bad_values_name_the_container_key_and_value() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case; 11] = [
            (
                &["VIRTUAL_HOST=a.foo.bar", "VIRTUAL_PORT=abc"],
                &[],
                "VIRTUAL_PORT",
                "abc",
            ),
            (
                &["VIRTUAL_HOST=a.foo.bar", "VIRTUAL_PORT=70000"],
                &[],
                "VIRTUAL_PORT",
                "70000",
            ),
            (&["VIRTUAL_HOST=~(broken"], &[], "VIRTUAL_HOST", "~(broken"),
            (&["VIRTUAL_HOST= , "], &[], "VIRTUAL_HOST", ","),
            (
                &["VIRTUAL_HOST=a.foo.bar", "VIRTUAL_PROTO=ftp"],
                &[],
                "VIRTUAL_PROTO",
                "ftp",
            ),
            (
                &["VIRTUAL_HOST=a.foo.bar", "VIRTUAL_PATH=app"],
                &[],
                "VIRTUAL_PATH",
                "app",
            ),
            (
                &["VIRTUAL_HOST=a.foo.bar", "HTTPS_METHOD=maybe"],
                &[],
                "HTTPS_METHOD",
                "maybe",
            ),
            (
                &["VIRTUAL_HOST=a.foo.bar"],
                &[("branchgate.port", "0")],
                "branchgate.port",
                "0",
            ),
            (
                &["LETSENCRYPT_HOST=*.foo.bar", "VIRTUAL_HOST=a.foo.bar"],
                &[],
                "LETSENCRYPT_HOST",
                "*.foo.bar",
            ),
            (
                &["VIRTUAL_HOST=a.foo.bar", "HSTS=forever"],
                &[],
                "HSTS",
                "forever",
            ),
            (
                &["VIRTUAL_HOST=a.foo.bar"],
                &[("branchgate.cert_name", "../etc/key")],
                "branchgate.cert_name",
                "../etc/key",
            ),
        ];
        for (env, labels, key, value) in cases {
            let e = container_route(&container(env, labels)).unwrap_err();
            assert_eq!(
                (e.container.as_str(), e.key.as_str(), e.value.as_str()),
                ("web-1", key, value),
                "{e}"
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("container web-1: {key}=")),
                "{e}"
            );
        }
        let e = container_route(&container(&[], &[("branchgate.branch", "main")])).unwrap_err();
        assert_eq!(e.key, "branchgate.role");
    }

    #[test]
    fn a_container_without_a_reachable_address_routes_nowhere() {
        let mut c = container(&["VIRTUAL_HOST=a.foo.bar"], &[]);
        c.ip = None;
        let r = route(&c);
        assert!(r.upstreams.is_empty());
        assert_eq!(r.hosts.len(), 1);
    }
}
