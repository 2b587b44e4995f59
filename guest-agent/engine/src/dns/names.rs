//! Which names a container can resolve: the [`NameTable`] the DNS server
//! asks, and [`Directory`], the table built from the engine's endpoints with
//! dockerd's scoping (a container sees the names of the networks it is on,
//! and its own link aliases; nothing across networks).

use std::net::IpAddr;

/// The names the engine answers itself, as seen by one container.
pub trait NameTable: Send + Sync {
    /// The addresses `name` has for `container` (an ID); None when the name
    /// is not one of the engine's, so the question goes upstream. `name` is
    /// lower case, without the final dot.
    fn lookup(&self, container: &str, name: &str) -> Option<Vec<IpAddr>>;
    /// The name of `address` for `container` (a PTR answer, without the
    /// final dot); None when the address is not one of the engine's.
    fn reverse(&self, container: &str, address: IpAddr) -> Option<String>;
}

/// A table with no names: the VM's own resolver answers only the service names.
pub struct NoNames;

impl NameTable for NoNames {
    fn lookup(&self, _: &str, _: &str) -> Option<Vec<IpAddr>> {
        None
    }
    fn reverse(&self, _: &str, _: IpAddr) -> Option<String> {
        None
    }
}

/// One name a container can resolve, as the engine's network store lists
/// them for it (its networks only, its own links included): what
/// [`Visible`] answers from.
#[derive(Debug, Clone, PartialEq)]
pub struct VisibleName {
    pub name: String,
    pub address: IpAddr,
    /// The network's name (PTR answers are `name.network`, as dockerd's).
    pub network: String,
}

/// A [`NameTable`] over a function that lists, for a container ID, the
/// names it can resolve (scoping is the lister's business).
pub struct Visible<F>(pub F);

impl<F: Fn(&str) -> Vec<VisibleName> + Send + Sync> NameTable for Visible<F> {
    fn lookup(&self, container: &str, name: &str) -> Option<Vec<IpAddr>> {
        let mut found: Vec<IpAddr> = (self.0)(container)
            .into_iter()
            .filter(|v| {
                v.name.eq_ignore_ascii_case(name)
                    || name
                        .strip_suffix(&v.network)
                        .and_then(|n| n.strip_suffix('.'))
                        .is_some_and(|n| v.name.eq_ignore_ascii_case(n))
            })
            .map(|v| v.address)
            .collect();
        found.dedup();
        (!found.is_empty()).then_some(found)
    }

    fn reverse(&self, container: &str, address: IpAddr) -> Option<String> {
        // The lister names each endpoint by its container name first.
        (self.0)(container).into_iter().find(|v| v.address == address).map(|v| format!("{}.{}", v.name, v.network))
    }
}

/// One container's attachment to one network, as DNS sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Endpoint {
    /// The container's full ID.
    pub container_id: String,
    /// Without Docker's leading slash.
    pub container_name: String,
    /// The container's hostname (`--hostname`; Docker adds it as a DNS name).
    pub hostname: Option<String>,
    /// The network's name.
    pub network: String,
    /// `--network-alias` / compose service names, on this network only.
    pub aliases: Vec<String>,
    /// The container's addresses on this network.
    pub addresses: Vec<IpAddr>,
}

/// `--link target:alias` of a container on a user network: only the linking
/// container resolves `alias`, to the target's addresses on the networks
/// both are on.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub container_id: String,
    pub alias: String,
    pub target_id: String,
}

/// The short ID Docker answers for (the first 12 hex digits).
const SHORT_ID_LEN: usize = 12;

/// A snapshot of every endpoint on the networks with embedded DNS.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub endpoints: Vec<Endpoint>,
    pub links: Vec<Link>,
}

impl Endpoint {
    /// The names this endpoint answers to on its network.
    fn answers_to(&self, name: &str) -> bool {
        let short_id = self.container_id.get(..SHORT_ID_LEN).unwrap_or(&self.container_id);
        self.container_name.eq_ignore_ascii_case(name)
            || short_id.eq_ignore_ascii_case(name)
            || self.hostname.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(name))
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    }
}

impl Directory {
    /// The networks `container` is on.
    fn networks_of<'a>(&'a self, container: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.endpoints.iter().filter(move |e| e.container_id == container).map(|e| e.network.as_str())
    }

    fn on_network<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints.iter().filter(move |e| e.network == network)
    }

    /// `name` looked up on one network.
    fn lookup_on(&self, network: &str, name: &str) -> Vec<IpAddr> {
        self.on_network(network).filter(|e| e.answers_to(name)).flat_map(|e| e.addresses.iter().copied()).collect()
    }
}

impl NameTable for Directory {
    fn lookup(&self, container: &str, name: &str) -> Option<Vec<IpAddr>> {
        let networks: Vec<&str> = self.networks_of(container).collect();
        let mut found = Vec::new();
        // `name.network`, as dockerd answers it, for a network the container is on.
        for network in &networks {
            if let Some(short) = name.strip_suffix(network).and_then(|n| n.strip_suffix('.')) {
                found.extend(self.lookup_on(network, short));
            }
        }
        for network in &networks {
            found.extend(self.lookup_on(network, name));
        }
        for link in self.links.iter().filter(|l| l.container_id == container && l.alias.eq_ignore_ascii_case(name)) {
            for network in &networks {
                found.extend(
                    self.on_network(network)
                        .filter(|e| e.container_id == link.target_id)
                        .flat_map(|e| e.addresses.iter().copied()),
                );
            }
        }
        found.dedup();
        (!found.is_empty()).then_some(found)
    }

    fn reverse(&self, container: &str, address: IpAddr) -> Option<String> {
        self.networks_of(container).find_map(|network| {
            self.on_network(network)
                .find(|e| e.addresses.contains(&address))
                .map(|e| format!("{}.{}", e.container_name, network))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str, name: &str, network: &str, address: &str, aliases: &[&str]) -> Endpoint {
        Endpoint {
            container_id: id.into(),
            container_name: name.into(),
            hostname: None,
            network: network.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            addresses: vec![address.parse().unwrap()],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// web and db share `front`; cache is alone on `back`; db is on both.
    fn directory() -> Directory {
        Directory {
            endpoints: vec![
                endpoint("aaaaaaaaaaaa1111", "web", "front", "172.18.0.2", &["www"]),
                endpoint("bbbbbbbbbbbb2222", "db", "front", "172.18.0.3", &["database"]),
                endpoint("bbbbbbbbbbbb2222", "db", "back", "172.19.0.3", &["pg"]),
                endpoint("cccccccccccc3333", "cache", "back", "172.19.0.4", &[]),
            ],
            links: vec![Link {
                container_id: "aaaaaaaaaaaa1111".into(),
                alias: "sql".into(),
                target_id: "bbbbbbbbbbbb2222".into(),
            }],
        }
    }

    #[test]
    fn names_aliases_and_short_ids_on_shared_networks() {
        let names = directory();
        let web = "aaaaaaaaaaaa1111";
        assert_eq!(names.lookup(web, "db"), Some(vec![ip("172.18.0.3")]), "only db's address on front");
        assert_eq!(names.lookup(web, "database"), Some(vec![ip("172.18.0.3")]));
        assert_eq!(names.lookup(web, "DB"), Some(vec![ip("172.18.0.3")]), "names are case-insensitive");
        assert_eq!(names.lookup(web, "bbbbbbbbbbbb"), Some(vec![ip("172.18.0.3")]), "short ID");
        assert_eq!(names.lookup(web, "bbbbbbbbbbbb2222"), None, "the full ID is no name");
        assert_eq!(names.lookup(web, "web"), Some(vec![ip("172.18.0.2")]), "itself");
        assert_eq!(names.lookup(web, "db.front"), Some(vec![ip("172.18.0.3")]), "name.network");
    }

    #[test]
    fn nothing_resolves_across_networks() {
        let names = directory();
        let (web, cache) = ("aaaaaaaaaaaa1111", "cccccccccccc3333");
        assert_eq!(names.lookup(web, "cache"), None, "cache is on back only");
        assert_eq!(names.lookup(web, "pg"), None, "db's alias on back is not db's alias on front");
        assert_eq!(names.lookup(cache, "web"), None);
        assert_eq!(names.lookup(cache, "www"), None);
        assert_eq!(names.lookup(cache, "db"), Some(vec![ip("172.19.0.3")]), "db's address on back");
        assert_eq!(names.lookup(cache, "db.front"), None, "a network cache is not on");
        assert_eq!(names.lookup("unknown", "db"), None, "a container on no network");
    }

    #[test]
    fn link_aliases_belong_to_the_linking_container() {
        let names = directory();
        assert_eq!(names.lookup("aaaaaaaaaaaa1111", "sql"), Some(vec![ip("172.18.0.3")]));
        assert_eq!(names.lookup("cccccccccccc3333", "sql"), None);
    }

    #[test]
    fn a_shared_alias_has_every_address() {
        let mut names = directory();
        names.endpoints.push(endpoint("dddddddddddd4444", "web-2", "front", "172.18.0.5", &["www"]));
        let mut found = names.lookup("bbbbbbbbbbbb2222", "www").unwrap();
        found.sort();
        assert_eq!(found, vec![ip("172.18.0.2"), ip("172.18.0.5")]);
    }

    #[test]
    fn hostnames_answer_too() {
        let mut names = directory();
        names.endpoints[1].hostname = Some("db-host".into());
        assert_eq!(names.lookup("aaaaaaaaaaaa1111", "db-host"), Some(vec![ip("172.18.0.3")]));
    }

    #[test]
    fn a_listed_table_answers_names_and_name_dot_network() {
        let listed = |container: &str| -> Vec<VisibleName> {
            let entry = |name: &str, address: &str| VisibleName {
                name: name.into(),
                address: address.parse().unwrap(),
                network: "front".into(),
            };
            match container {
                "web" => vec![entry("db", "172.18.0.3"), entry("database", "172.18.0.3"), entry("www", "172.18.0.2")],
                _ => vec![],
            }
        };
        let table = Visible(listed);
        assert_eq!(table.lookup("web", "DB"), Some(vec![ip("172.18.0.3")]));
        assert_eq!(table.lookup("web", "database.front"), Some(vec![ip("172.18.0.3")]));
        assert_eq!(table.lookup("web", "db.back"), None);
        assert_eq!(table.lookup("other", "db"), None, "what the lister does not list");
        assert_eq!(table.reverse("web", ip("172.18.0.3")).as_deref(), Some("db.front"));
    }

    #[test]
    fn reverse_lookups_name_the_container_on_its_network() {
        let names = directory();
        assert_eq!(names.reverse("aaaaaaaaaaaa1111", ip("172.18.0.3")).as_deref(), Some("db.front"));
        assert_eq!(names.reverse("aaaaaaaaaaaa1111", ip("172.19.0.4")), None, "not across networks");
        assert_eq!(names.reverse("cccccccccccc3333", ip("172.19.0.3")).as_deref(), Some("db.back"));
    }
}
