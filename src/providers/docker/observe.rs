//! What one container inspect tells the Docker provider, and which of the
//! container's addresses branchgate can reach.
//!
//! Pure functions over bollard's models, so every rule here is unit-tested
//! without an engine: which containers are running, their health, and the
//! reachability rule (`--network`, a network shared with branchgate's own
//! container, else the first network by name).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};

use crate::providers::labels::Container;

/// Docker health as far as routing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No healthcheck: in its pool.
    None,
    /// Healthcheck still starting: out of its pool.
    Starting,
    /// Healthy: in its pool.
    Healthy,
    /// Unhealthy: out of its pool.
    Unhealthy,
}

/// One network a container is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Network name.
    pub name: String,
    /// Network id.
    pub id: String,
    /// The container's address there (none while it is being set up).
    pub ip: Option<IpAddr>,
}

/// A running container as one inspect shows it; the upstream address is
/// chosen later by [`Reach::pick`], since it depends on branchgate's own networks.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Id, name, env, labels, exposed ports (`ip` still unset).
    pub container: Container,
    /// Networks by name.
    pub networks: Vec<Attachment>,
    /// `--network host`: reachable on loopback when branchgate runs on the host.
    pub host_network: bool,
    /// Docker health.
    pub health: Health,
    /// Paused containers cannot answer.
    pub paused: bool,
}

impl Observed {
    /// Whether the container may take requests (running, not paused, not
    /// `starting`/`unhealthy`); the reason otherwise.
    pub fn out_of_service(&self) -> Option<&'static str> {
        if self.paused {
            return Some("paused");
        }
        match self.health {
            Health::None | Health::Healthy => None,
            Health::Starting => Some("health check starting"),
            Health::Unhealthy => Some("unhealthy"),
        }
    }
}

/// Reads an inspect response. `None`: the container is not running (created,
/// exited, restarting, dead), so it routes nothing.
pub fn observe(resp: ContainerInspectResponse) -> Option<Observed> {
    let state = resp.state.unwrap_or_default();
    let running = state.running.unwrap_or(false)
        && !state.restarting.unwrap_or(false)
        && !matches!(
            state.status,
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
        );
    if !running {
        return None;
    }
    let health = match state.health.and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => Health::None,
    };
    let config = resp.config.unwrap_or_default();
    let exposed_ports = config
        .exposed_ports
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            p.strip_suffix("/tcp")
                .or(Some(p.as_str()))
                .filter(|p| !p.contains('/'))
        })
        .filter_map(|p| p.parse().ok())
        .collect();
    let network_mode = resp
        .host_config
        .and_then(|h| h.network_mode)
        .unwrap_or_default();
    let mut networks: Vec<Attachment> = resp
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| Attachment {
            // IPv4 when the network has it, else its IPv6 address.
            ip: [&ep.ip_address, &ep.global_ipv6_address]
                .into_iter()
                .find_map(|ip| ip.as_deref().and_then(|ip| ip.parse().ok())),
            id: ep.network_id.unwrap_or_default(),
            name,
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    Some(Observed {
        container: Container {
            id: resp.id.unwrap_or_default(),
            name: resp
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            env: config.env.unwrap_or_default(),
            labels: config
                .labels
                .unwrap_or_default()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            exposed_ports,
            ip: None,
        },
        networks,
        host_network: network_mode == "host",
        health,
        paused: state.paused.unwrap_or(false),
    })
}

/// Where branchgate runs, which decides the address it uses for a container.
#[derive(Clone, Debug, Default)]
pub struct Reach {
    /// `--network NAME`: only addresses on this network (name or id).
    pub network: Option<String>,
    /// Branchgate's own container and its networks, when it runs in one.
    pub own: Option<OwnContainer>,
}

/// Branchgate's own container.
#[derive(Clone, Debug)]
pub struct OwnContainer {
    /// Its id.
    pub id: String,
    /// Its networks.
    pub networks: Vec<Attachment>,
    /// It shares the host's network stack.
    pub host_network: bool,
}

impl Reach {
    /// The address to use for `c`, or why there is none.
    pub fn pick(&self, c: &Observed) -> Result<IpAddr, String> {
        let on_host_stack = match &self.own {
            None => true,
            Some(own) => own.host_network,
        };
        if c.host_network {
            return if on_host_stack {
                Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
            } else {
                Err("it uses the host network and branchgate runs in a container".into())
            };
        }
        let with_ip = |a: &&Attachment| a.ip.is_some();
        let found = if let Some(want) = &self.network {
            c.networks
                .iter()
                .filter(with_ip)
                .find(|a| a.name == *want || a.id == *want)
                .ok_or_else(|| format!("it is not attached to --network {want}"))?
        } else if let Some(own) = self.own.as_ref().filter(|o| !o.host_network) {
            c.networks
                .iter()
                .filter(with_ip)
                .find(|a| {
                    own.networks
                        .iter()
                        .any(|o| o.id == a.id && !a.id.is_empty())
                })
                .ok_or_else(|| {
                    let names: Vec<&str> = own.networks.iter().map(|n| n.name.as_str()).collect();
                    format!(
                        "it shares no network with branchgate's container (on {})",
                        names.join(", ")
                    )
                })?
        } else {
            c.networks
                .iter()
                .find(with_ip)
                .ok_or("it has no address on any network")?
        };
        Ok(found.ip.expect("filtered on ip"))
    }
}

/// The id of the container this process runs in, if any. Docker bind-mounts
/// `/etc/hostname` (and `hosts`, `resolv.conf`) from
/// `.../containers/<id>/`, which `/proc/self/mountinfo` shows under cgroup v1
/// and v2 alike; `/proc/self/cgroup` (v1 only) is the fallback.
pub fn own_container_id() -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    id_from_mountinfo(&mountinfo).or_else(|| id_from_cgroup(&cgroup))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn id_from_mountinfo(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| l.contains("/etc/hostname") || l.contains("/etc/hosts"))
        .flat_map(|l| l.split(' '))
        .find_map(|field| {
            let rest = field.split("/containers/").nth(1)?;
            let id = rest.split('/').next()?;
            is_container_id(id).then(|| id.to_owned())
        })
}

fn id_from_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let path = l.rsplit(':').next()?;
        path.split('/').rev().find_map(|seg| {
            let seg = seg.strip_prefix("docker-").unwrap_or(seg);
            let seg = seg.strip_suffix(".scope").unwrap_or(seg);
            is_container_id(seg).then(|| seg.to_owned())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerConfig, ContainerState, EndpointSettings, Health as DockerHealth, HostConfig,
        NetworkSettings,
    };

    const ID: &str = "3f1c0d0e6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f";

    fn inspect(networks: &[(&str, &str, &str)]) -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some(ID.into()),
            name: Some("/web".into()),
            state: Some(ContainerState {
                running: Some(true),
                status: Some(ContainerStateStatusEnum::RUNNING),
                ..Default::default()
            }),
            config: Some(ContainerConfig {
                env: Some(vec!["VIRTUAL_HOST=a.test".into()]),
                exposed_ports: Some(vec!["8080/tcp".into(), "53/udp".into()]),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(
                    networks
                        .iter()
                        .map(|(name, id, ip)| {
                            let ep = EndpointSettings {
                                network_id: Some((*id).into()),
                                ip_address: Some((*ip).into()),
                                ..Default::default()
                            };
                            ((*name).to_owned(), ep)
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn own(networks: &[(&str, &str)]) -> OwnContainer {
        OwnContainer {
            id: "self".into(),
            networks: networks
                .iter()
                .map(|(n, i)| Attachment {
                    name: (*n).into(),
                    id: (*i).into(),
                    ip: None,
                })
                .collect(),
            host_network: false,
        }
    }

    #[test]
    fn a_running_container_is_read_whole() {
        let o = observe(inspect(&[("bridge", "n1", "172.17.0.2")])).unwrap();
        assert_eq!(o.container.name, "web");
        assert_eq!(o.container.id, ID);
        // udp ports are not HTTP upstreams.
        assert_eq!(o.container.exposed_ports, vec![8080]);
        assert_eq!(o.health, Health::None);
        assert_eq!(o.out_of_service(), None);
    }

    #[test]
    fn stopped_restarting_and_unhealthy_containers() {
        let mut r = inspect(&[]);
        r.state.as_mut().unwrap().running = Some(false);
        assert!(observe(r).is_none());

        let mut r = inspect(&[]);
        r.state.as_mut().unwrap().restarting = Some(true);
        assert!(observe(r).is_none());

        for (status, expect) in [
            (HealthStatusEnum::STARTING, Some("health check starting")),
            (HealthStatusEnum::UNHEALTHY, Some("unhealthy")),
            (HealthStatusEnum::HEALTHY, None),
        ] {
            let mut r = inspect(&[]);
            r.state.as_mut().unwrap().health = Some(DockerHealth {
                status: Some(status),
                ..Default::default()
            });
            assert_eq!(observe(r).unwrap().out_of_service(), expect);
        }

        let mut r = inspect(&[]);
        r.state.as_mut().unwrap().paused = Some(true);
        assert_eq!(observe(r).unwrap().out_of_service(), Some("paused"));
    }

    #[test]
    fn on_the_host_the_first_network_by_name_with_an_address() {
        let o = observe(inspect(&[
            ("zeta", "n3", "10.0.3.2"),
            ("alpha", "n1", ""),
            ("beta", "n2", "10.0.2.2"),
        ]))
        .unwrap();
        let ip = Reach::default().pick(&o).unwrap();
        assert_eq!(ip, "10.0.2.2".parse::<IpAddr>().unwrap());

        let reach = Reach {
            network: Some("zeta".into()),
            own: None,
        };
        assert_eq!(reach.pick(&o).unwrap().to_string(), "10.0.3.2");
        let reach = Reach {
            network: Some("n2".into()),
            own: None,
        };
        assert_eq!(reach.pick(&o).unwrap().to_string(), "10.0.2.2");
        let reach = Reach {
            network: Some("other".into()),
            own: None,
        };
        assert!(reach.pick(&o).unwrap_err().contains("--network other"));

        let none = observe(inspect(&[])).unwrap();
        assert!(Reach::default().pick(&none).is_err());

        let mut r = inspect(&[("v6only", "n6", "")]);
        let nets = r
            .network_settings
            .as_mut()
            .unwrap()
            .networks
            .as_mut()
            .unwrap();
        nets.get_mut("v6only").unwrap().global_ipv6_address = Some("fd00::2".into());
        let o = observe(r).unwrap();
        assert_eq!(Reach::default().pick(&o).unwrap().to_string(), "fd00::2");
    }

    #[test]
    fn in_a_container_only_a_shared_network_counts() {
        let o = observe(inspect(&[
            ("alpha", "n1", "10.0.1.2"),
            ("proxy", "n9", "10.0.9.2"),
        ]))
        .unwrap();
        let reach = Reach {
            network: None,
            own: Some(own(&[("proxy", "n9")])),
        };
        assert_eq!(reach.pick(&o).unwrap().to_string(), "10.0.9.2");
        let reach = Reach {
            network: None,
            own: Some(own(&[("elsewhere", "n7")])),
        };
        let err = reach.pick(&o).unwrap_err();
        assert!(
            err.contains("shares no network") && err.contains("elsewhere"),
            "{err}"
        );
    }

    #[test]
    fn host_network_containers_are_on_loopback_only_from_the_host() {
        let mut r = inspect(&[("host", "h", "")]);
        r.host_config = Some(HostConfig {
            network_mode: Some("host".into()),
            ..Default::default()
        });
        let o = observe(r).unwrap();
        assert_eq!(Reach::default().pick(&o).unwrap().to_string(), "127.0.0.1");
        let reach = Reach {
            network: None,
            own: Some(own(&[("bridge", "b")])),
        };
        assert!(reach.pick(&o).is_err());
    }

    #[test]
    fn own_id_from_cgroup_v2_mountinfo_and_v1_cgroup() {
        let mountinfo = format!(
            "612 590 0:50 / / rw,relatime master:300 - overlay overlay rw\n\
             633 612 254:1 /var/lib/docker/containers/{ID}/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda1 rw\n\
             634 612 254:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(id_from_mountinfo(&mountinfo).as_deref(), Some(ID));
        assert_eq!(
            id_from_mountinfo("612 590 0:50 / / rw - overlay overlay rw\n"),
            None
        );

        assert_eq!(
            id_from_cgroup(&format!("12:pids:/docker/{ID}\n")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            id_from_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n")).as_deref(),
            Some(ID)
        );
        assert_eq!(id_from_cgroup("0::/\n"), None);
    }
}
