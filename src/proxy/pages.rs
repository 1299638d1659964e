//! The bodies of the pages branchgate answers for the branch domain: the
//! environment matrix (`DOMAIN`) and the "branch not deployed" page, as HTML
//! or JSON. [`super::respond`] decides the status and headers. Branch names
//! come from container labels, so every one is escaped.

use std::fmt::Write as _;

use crate::routes::{BranchIndex, Role};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn json_members(b: &BranchIndex, role: Role) -> serde_json::Value {
    b.members(role)
        .list()
        .into_iter()
        .map(|(slug, branch)| serde_json::json!({ "slug": slug, "branch": branch }))
        .collect()
}

/// A whole HTML page around `body`.
fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.3em .6em;border:1px solid #ccc}}\
         table{{border-collapse:collapse}}small{{color:#666}}</style></head>\n<body>\n<h1>{t}</h1>\n{body}\
         <hr><small>branchgate</small>\n</body></html>\n",
        t = esc(title)
    )
}

/// Scheme-relative links (the scheme the page was fetched over) that keep
/// the port the request named, if any.
struct Links<'a> {
    domain: &'a str,
    port: Option<&'a str>,
}

impl Links<'_> {
    fn to(&self, labels: &[&str]) -> String {
        let mut out = String::from("//");
        for l in labels {
            out.push_str(l);
            out.push('.');
        }
        out.push_str(self.domain);
        if let Some(p) = self.port {
            out.push(':');
            out.push_str(p);
        }
        out.push('/');
        out
    }
}

/// The port of a `Host` value (`a.b:8080` → `8080`), if it names one.
pub fn host_port(host: &str) -> Option<&str> {
    let (_, port) = host.rsplit_once(':')?;
    (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(']'))
        .then_some(port)
}

/// `DOMAIN`: every deployed frontend × backend as a link, with branch names.
pub fn matrix(b: &BranchIndex, port: Option<&str>, json: bool) -> String {
    let domain = b.domain();
    let links = Links { domain, port };
    let (fes, bes) = (b.frontends.list(), b.backends.list());
    if json {
        let body = serde_json::json!({
            "domain": domain,
            "frontends": json_members(b, Role::Frontend),
            "backends": json_members(b, Role::Backend),
        });
        return body.to_string();
    }
    let mut h = String::new();
    if fes.is_empty() || bes.is_empty() {
        let _ = writeln!(
            h,
            "<p>{} frontend and {} backend branches are deployed; an environment needs one of each.</p>",
            fes.len(),
            bes.len()
        );
    } else {
        h.push_str("<table>\n<tr><th>frontend \\ backend</th>");
        for (slug, branch) in &bes {
            let _ = write!(
                h,
                "<th>{}<br><small>{}</small></th>",
                esc(slug),
                esc(branch)
            );
        }
        h.push_str("</tr>\n");
        for (fe, fe_branch) in &fes {
            let _ = write!(
                h,
                "<tr><th>{}<br><small>{}</small></th>",
                esc(fe),
                esc(fe_branch)
            );
            for (be, _) in &bes {
                let url = links.to(&[fe, be]);
                let text = url.trim_start_matches('/').trim_end_matches('/');
                let _ = write!(h, "<td><a href=\"{}\">{}</a></td>", esc(&url), esc(text));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
    conflicts(&mut h, b, domain);
    html_page(&format!("Environments on {domain}"), &h)
}

fn conflicts(h: &mut String, b: &BranchIndex, domain: &str) {
    for role in [Role::Frontend, Role::Backend] {
        for (slug, names) in b.members(role).conflicts() {
            let names: Vec<String> = names.iter().map(|n| esc(n)).collect();
            let _ = writeln!(
                h,
                "<p><strong>Conflict:</strong> {role} branches {} all become <code>{}</code>; \
                 none is served at {}.{} until one is renamed.</p>",
                names.join(", "),
                esc(slug),
                esc(slug),
                esc(domain)
            );
        }
    }
}

/// A named branch of `role` is not deployed: 404 naming it, linking what is.
pub fn missing(b: &BranchIndex, role: Role, slug: &str, port: Option<&str>, json: bool) -> String {
    let domain = b.domain();
    let links = Links { domain, port };
    let conflict = b.members(role).conflicts().get(slug);
    if json {
        let body = serde_json::json!({
            "error": "branch not deployed",
            "role": role.to_string(),
            "branch": slug,
            "conflicting_branches": conflict,
            "frontends": json_members(b, Role::Frontend),
            "backends": json_members(b, Role::Backend),
        });
        return body.to_string();
    }
    let mut h = format!(
        "<p>No {role} branch <code>{}</code> is deployed on {}.</p>\n",
        esc(slug),
        esc(domain)
    );
    for (title, role, list) in [
        ("Frontend branches", Role::Frontend, b.frontends.list()),
        ("Backend branches", Role::Backend, b.backends.list()),
    ] {
        let _ = writeln!(h, "<h2>{title}</h2>");
        if list.is_empty() {
            h.push_str("<p>none</p>\n");
            continue;
        }
        h.push_str("<ul>\n");
        for (s, branch) in list {
            // A frontend alone; a backend behind the default frontend would
            // guess, so backends link to the matrix.
            let url = match role {
                Role::Frontend => links.to(&[s]),
                Role::Backend => links.to(&[]),
            };
            let _ = writeln!(
                h,
                "<li><a href=\"{}\">{}</a> <small>{}</small></li>",
                esc(&url),
                esc(s),
                esc(branch)
            );
        }
        h.push_str("</ul>\n");
    }
    let _ = writeln!(
        h,
        "<p><a href=\"{}\">All environments</a></p>",
        esc(&links.to(&[]))
    );
    conflicts(&mut h, b, domain);
    html_page(&format!("{role} branch {slug} is not deployed"), &h)
}
