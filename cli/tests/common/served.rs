//! A running `crewq serve` for a test, and a small HTTP/1.1 client for it
//! (std only: one request per connection).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::Crew;

/// A running `crewq serve` on a free loopback port, stopped when dropped.
pub struct Served {
    child: Child,
    /// `127.0.0.1:<port>`
    pub addr: String,
}

impl Served {
    pub fn start(crew: &Crew, agents: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crewq"))
            .arg("serve")
            .args(agents)
            .args(["--redis", crew.server.url(), "--key-prefix", &crew.prefix])
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run crewq serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("crewq serve says where it listens");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Served { child, addr }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, "127.0.0.1", None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        let body = body.to_string();
        self.request("POST", path, "127.0.0.1", Some(("application/json", &body)))
    }

    /// One HTTP/1.1 request on its own connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        host: &str,
        body: Option<(&str, &str)>,
    ) -> Reply {
        let mut stream = TcpStream::connect(&self.addr).expect("connect to crewq serve");
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        if let Some((content_type, body)) = body {
            request += &format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        } else {
            request += "\r\n";
        }
        stream.write_all(request.as_bytes()).expect("send");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read the reply");
        let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "a chunked reply this client does not read: {head}"
        );
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        Reply {
            status,
            body: body.to_owned(),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn ok_json(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.body);
        self.json()
    }
}
