use super::*;
use bollard::models::EventActor;

#[test]
fn unreachable_and_out_of_service_containers_keep_their_hosts_and_say_why() {
    use observe::{Health, Observed};
    let mut o = Observed {
        container: crate::providers::labels::Container {
            name: "web-1".into(),
            env: vec!["VIRTUAL_HOST=a.foo.bar".into()],
            ..Default::default()
        },
        networks: Vec::new(),
        host_network: false,
        health: Health::None,
        paused: false,
    };
    let (route, note) = route_for(&Reach::default(), &mut o);
    let route = route.expect("hosts kept");
    assert!(route.upstreams.is_empty());
    let note = note.expect("a note");
    assert_eq!(
        (note.severity, &note.kind),
        (Severity::Warning, &NoteKind::Unreachable)
    );
    assert!(note.message.contains("web-1") && note.message.contains("unreachable"));

    o.networks.push(observe::Attachment {
        name: "bridge".into(),
        id: "n".into(),
        ip: Some("172.17.0.9".parse().unwrap()),
    });
    o.health = Health::Unhealthy;
    let (route, note) = route_for(&Reach::default(), &mut o);
    assert!(route.unwrap().upstreams.is_empty());
    let note = note.unwrap();
    assert_eq!(
        (note.severity, &note.kind),
        (Severity::Info, &NoteKind::OutOfService)
    );
    assert!(note.message.contains("out of its pool: unhealthy"));
    assert_eq!(note.source, "web-1");

    o.health = Health::Healthy;
    let (route, note) = route_for(&Reach::default(), &mut o);
    assert_eq!(route.unwrap().upstreams[0].to_string(), "172.17.0.9:80");
    assert_eq!(note, None);
}

#[test]
fn engine_times_parse() {
    assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        unix_seconds("2026-11-23T10:11:12.123456789Z"),
        Some(1_795_428_672)
    );
    assert_eq!(
        unix_seconds("2026-11-23T11:11:12.5+01:00"),
        Some(1_795_428_672)
    );
    assert_eq!(unix_seconds("2000-02-29T00:00:00Z"), Some(951_782_400));
    assert_eq!(unix_seconds("yesterday"), None);
    assert_eq!(unix_seconds("2026-11-23 10:11:12Z"), None);
}

fn event(
    typ: EventMessageTypeEnum,
    action: &str,
    id: &str,
    attrs: &[(&str, &str)],
) -> EventMessage {
    EventMessage {
        typ: Some(typ),
        action: Some(action.into()),
        actor: Some(EventActor {
            id: Some(id.into()),
            attributes: Some(
                attrs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
        }),
        ..Default::default()
    }
}

#[test]
fn events_name_the_container_they_change() {
    use EventMessageTypeEnum::{CONTAINER, IMAGE, NETWORK};
    let mut changed = BTreeSet::new();
    note_event(&event(CONTAINER, "start", "c1", &[]), &mut changed);
    note_event(
        &event(CONTAINER, "health_status: healthy", "c2", &[]),
        &mut changed,
    );
    note_event(
        &event(NETWORK, "disconnect", "net", &[("container", "c3")]),
        &mut changed,
    );
    note_event(
        &event(CONTAINER, "exec_start: /bin/check", "c4", &[]),
        &mut changed,
    );
    note_event(&event(NETWORK, "create", "net", &[]), &mut changed);
    note_event(&event(IMAGE, "pull", "img", &[]), &mut changed);
    let got: Vec<&str> = changed.iter().map(String::as_str).collect();
    assert_eq!(got, ["c1", "c2", "c3"]);
}
