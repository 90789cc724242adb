//! A crew of worker processes (`crewq-chaos worker`), started, SIGKILLed,
//! restarted and stopped by the runner, and killed on drop.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::terminate;

/// How every member of a crew runs.
#[derive(Clone, Debug)]
pub struct CrewConfig {
    /// The runner's own executable (which has the `worker` subcommand).
    pub exe: PathBuf,
    /// Where workers connect: the server, or the proxy in front of it.
    pub url: String,
    /// The run's key prefix.
    pub prefix: String,
    /// The lease, in ms.
    pub lease_ms: u64,
    /// Each worker's concurrency.
    pub concurrency: usize,
    /// Run logs go to `<dir>/runs`, workers' stderr to `<dir>/stderr`.
    pub dir: PathBuf,
}

/// One running worker process.
struct Member {
    consumer: String,
    child: Child,
}

/// A worker process that ended without being told to.
#[derive(Clone, Debug)]
pub struct Exit {
    /// Its consumer name.
    pub consumer: String,
    /// Its exit code (`None`: a signal).
    pub code: Option<i32>,
}

/// The worker processes of one scenario.
pub struct Crew {
    config: CrewConfig,
    members: Vec<Member>,
    launched: u64,
    exits: Vec<Exit>,
}

impl Crew {
    /// An empty crew.
    ///
    /// # Errors
    ///
    /// When its log directories cannot be made.
    pub fn new(config: CrewConfig) -> std::io::Result<Crew> {
        std::fs::create_dir_all(config.dir.join("runs"))?;
        std::fs::create_dir_all(config.dir.join("stderr"))?;
        Ok(Crew {
            config,
            members: Vec::new(),
            launched: 0,
            exits: Vec::new(),
        })
    }

    /// The directory of the handlers' run logs.
    pub fn runs_dir(&self) -> PathBuf {
        self.config.dir.join("runs")
    }

    /// Starts a worker named `consumer`.
    ///
    /// # Errors
    ///
    /// When the process cannot be started.
    pub fn spawn(&mut self, consumer: &str) -> std::io::Result<()> {
        self.launched += 1;
        let tag = format!("{consumer}-{}", self.launched);
        let stderr = File::create(self.config.dir.join("stderr").join(&tag))?;
        let run_log = self.config.dir.join("runs").join(&tag);
        let child = Command::new(&self.config.exe)
            .arg("worker")
            .args(["--url", &self.config.url])
            .args(["--prefix", &self.config.prefix])
            .args(["--consumer", consumer])
            .args(["--lease-ms", &self.config.lease_ms.to_string()])
            .args(["--concurrency", &self.config.concurrency.to_string()])
            .arg("--run-log")
            .arg(&run_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?;
        self.members.push(Member {
            consumer: consumer.to_owned(),
            child,
        });
        Ok(())
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no worker runs.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// SIGKILLs the `index`th worker (modulo the crew's size); returns its
    /// consumer name.
    pub fn kill(&mut self, index: usize) -> Option<String> {
        if self.members.is_empty() {
            return None;
        }
        let mut member = self.members.remove(index % self.members.len());
        let _ = member.child.kill();
        let _ = member.child.wait();
        Some(member.consumer)
    }

    /// Notes workers that ended by themselves (and forgets them); returns
    /// their consumer names, so the caller can start them again.
    pub fn reap(&mut self) -> Vec<String> {
        let mut ended = Vec::new();
        self.members
            .retain_mut(|member| match member.child.try_wait() {
                Ok(Some(status)) => {
                    self.exits.push(Exit {
                        consumer: member.consumer.clone(),
                        code: status.code(),
                    });
                    ended.push(member.consumer.clone());
                    false
                }
                _ => true,
            });
        ended
    }

    /// Workers that ended without being told to, so far.
    pub fn exits(&self) -> &[Exit] {
        &self.exits
    }

    /// SIGTERMs every worker and waits up to `deadline` for them to finish
    /// their graceful shutdown; SIGKILLs the rest. Returns how many had to
    /// be killed.
    pub fn stop_all(&mut self, deadline: Duration) -> usize {
        for member in &self.members {
            terminate(member.child.id());
        }
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            self.members
                .retain_mut(|m| !matches!(m.child.try_wait(), Ok(Some(_))));
            if self.members.is_empty() {
                return 0;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let killed = self.members.len();
        self.kill_all();
        killed
    }

    fn kill_all(&mut self) {
        for mut member in self.members.drain(..) {
            let _ = member.child.kill();
            let _ = member.child.wait();
        }
    }

    /// The directory of the workers' stderr files.
    pub fn stderr_dir(&self) -> PathBuf {
        self.config.dir.join("stderr")
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        self.kill_all();
    }
}
