//! Where the Docker engine listens: `DOCKER_HOST`, or the default socket.

use pipeline_core::StageError;
use std::fmt;
use std::path::PathBuf;

/// The socket every Docker client tries when `DOCKER_HOST` is not set.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// How the engine address was chosen; error messages name it so a person knows what to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerHostSource {
    /// `DOCKER_HOST` from the environment.
    Environment,
    /// Given by the program ([`DockerHost::new`]).
    Configured,
    /// Nothing was set: [`DEFAULT_DOCKER_SOCKET`].
    Default,
}

/// The address of a Docker engine, as `DOCKER_HOST` writes it
/// (`unix:///var/run/docker.sock`, `tcp://127.0.0.1:2375`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerHost {
    address: String,
    source: DockerHostSource,
}

/// How to open a connection to the engine API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineEndpoint {
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Tcp(String),
}

impl DockerHost {
    /// `DOCKER_HOST` if it is set and not empty, else the default socket.
    pub fn from_env() -> Self {
        Self::from_env_value(std::env::var("DOCKER_HOST").ok())
    }

    fn from_env_value(value: Option<String>) -> Self {
        match value {
            Some(address) if !address.trim().is_empty() => Self {
                address: address.trim().to_string(),
                source: DockerHostSource::Environment,
            },
            _ => Self::default_socket(),
        }
    }

    /// An address chosen by the program, e.g. `unix:///run/user/1000/docker.sock`.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            source: DockerHostSource::Configured,
        }
    }

    pub fn default_socket() -> Self {
        Self {
            address: format!("unix://{DEFAULT_DOCKER_SOCKET}"),
            source: DockerHostSource::Default,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn source(&self) -> DockerHostSource {
        self.source
    }

    /// `unix:///tmp/x.sock (from DOCKER_HOST)`.
    pub fn describe(&self) -> String {
        match self.source {
            DockerHostSource::Environment => format!("{} (from DOCKER_HOST)", self.address),
            DockerHostSource::Configured => self.address.clone(),
            DockerHostSource::Default => {
                format!(
                    "{} (the default socket; DOCKER_HOST is not set)",
                    self.address
                )
            }
        }
    }

    /// What to do when nothing answers at this address.
    pub fn unreachable_help(&self) -> String {
        let start = "start the Docker engine (`sudo systemctl start docker`, or `dockerd`)";
        match self.source {
            DockerHostSource::Environment => format!(
                "{start}, or fix DOCKER_HOST (now `{}`) to point at a running engine, e.g. unix://{DEFAULT_DOCKER_SOCKET}",
                self.address
            ),
            DockerHostSource::Configured => format!(
                "{start}, or configure the address of a running engine (now `{}`)",
                self.address
            ),
            DockerHostSource::Default => format!(
                "{start}, or set DOCKER_HOST to the engine's address (unix:///path/to/docker.sock or tcp://host:port)"
            ),
        }
    }

    /// The engine API endpoint. Only `unix://` and plain `tcp://` are supported.
    pub fn endpoint(&self) -> Result<EngineEndpoint, StageError> {
        let unsupported = || {
            StageError::bad_input(format!(
                "unsupported Docker engine address {}: expected unix:///path/to/docker.sock or tcp://host:port",
                self.describe()
            ))
        };
        if let Some(path) = self.address.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(unsupported());
            }
            return Ok(EngineEndpoint::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = self.address.strip_prefix("tcp://") {
            if tls_verify_requested() {
                return Err(StageError::bad_input(format!(
                    "the Docker engine at {} needs TLS (DOCKER_TLS_VERIFY is set), which the engine pusher does not support",
                    self.describe()
                ))
                .with_help("use the engine's unix socket, or an engine listening on plain tcp"));
            }
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(unsupported());
            }
            let has_port = authority.rsplit_once(':').is_some_and(|(_, port)| {
                !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
            });
            let authority = if has_port {
                authority.to_string()
            } else {
                format!("{authority}:2375")
            };
            return Ok(EngineEndpoint::Tcp(authority));
        }
        Err(unsupported())
    }
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

fn tls_verify_requested() -> bool {
    std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|value| !value.is_empty() && value != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_and_tcp_addresses_are_endpoints() {
        assert_eq!(
            DockerHost::new("unix:///tmp/d.sock").endpoint(),
            Ok(EngineEndpoint::Unix(PathBuf::from("/tmp/d.sock")))
        );
        assert_eq!(
            DockerHost::new("tcp://10.0.0.1:2376").endpoint(),
            Ok(EngineEndpoint::Tcp("10.0.0.1:2376".into()))
        );
        assert_eq!(
            DockerHost::new("tcp://docker").endpoint(),
            Ok(EngineEndpoint::Tcp("docker:2375".into()))
        );
        assert_eq!(
            DockerHost::default_socket().endpoint(),
            Ok(EngineEndpoint::Unix(PathBuf::from(DEFAULT_DOCKER_SOCKET)))
        );
    }

    #[test]
    fn other_schemes_are_bad_input_naming_the_address() {
        let err = DockerHost::new("ssh://me@host").endpoint().err();
        let err = err.map(|err| (err.kind, err.message));
        assert!(matches!(
            err,
            Some((pipeline_core::StageErrorKind::BadInput, message)) if message.contains("ssh://me@host")
        ));
    }

    #[test]
    fn docker_host_from_the_environment_wins_unless_empty() {
        let host = DockerHost::from_env_value(Some("unix:///tmp/nonexistent.sock".into()));
        assert_eq!(host.source(), DockerHostSource::Environment);
        assert_eq!(
            host.describe(),
            "unix:///tmp/nonexistent.sock (from DOCKER_HOST)"
        );
        assert!(host.unreachable_help().contains("fix DOCKER_HOST"));
        assert_eq!(
            DockerHost::from_env_value(Some(" ".into())),
            DockerHost::default_socket()
        );
        assert_eq!(
            DockerHost::from_env_value(None),
            DockerHost::default_socket()
        );
    }

    #[test]
    fn descriptions_say_where_the_address_came_from() {
        assert_eq!(
            DockerHost::default_socket().describe(),
            "unix:///var/run/docker.sock (the default socket; DOCKER_HOST is not set)"
        );
        assert!(DockerHost::default_socket()
            .unreachable_help()
            .contains("set DOCKER_HOST"));
    }
}
