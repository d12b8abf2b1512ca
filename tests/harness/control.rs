//! Starting and stopping the collector and agents of a fleet, and querying it
//! with the `reachmap` CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use serde_json::Value;

use crate::bins::binary;
use crate::fleet::{
    COLLECTOR_GRPC_PORT, COLLECTOR_HTTP_PORT, COLLECTOR_URL, Fleet, HUB_ADDR, run_in,
};
use crate::netns::describe;
use crate::nodes::{NodeView, node_views};
use crate::process::{self, GRACE, Proc};
use crate::{eventually, patient};

/// How long the collector may take to start listening.
const COLLECTOR_STARTUP: Duration = Duration::from_secs(15);
/// How long one CLI invocation may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(15);

impl Fleet {
    /// Starts `reachmap-collector` in the hub namespace (gRPC on
    /// 198.18.0.1:7440, HTTP on 198.18.0.1:7441, data in the fleet directory,
    /// agents probing every second)
    /// and waits until it accepts connections. The data directory survives
    /// restarts of the collector.
    pub fn start_collector(&mut self) {
        self.start_collector_with(&[]);
    }

    /// `start_collector` with more flags.
    pub fn start_collector_with(&mut self, extra: &[&str]) {
        assert!(self.collector.is_none(), "the collector is already running");
        let data_dir = self.dir().join("collector-data");
        std::fs::create_dir_all(&data_dir).expect("cannot create the collector data dir");
        let listen = format!("{HUB_ADDR}:{COLLECTOR_GRPC_PORT}");
        let http = format!("{HUB_ADDR}:{COLLECTOR_HTTP_PORT}");
        let data = data_dir.to_str().expect("temp dir path is not UTF-8");
        let args = [
            "--listen",
            &listen,
            "--http",
            &http,
            "--data-dir",
            data,
            "--probe-interval",
            "1s",
            "--probe-timeout",
            "1s",
        ];
        let args: Vec<&str> = args.iter().chain(extra).copied().collect();
        let log = process::log_path(self.dir(), "collector");
        let bin = binary("reachmap-collector");
        let env = self.isolated_config();
        let p = Proc::spawn("collector", &self.hub, &bin, &args, &env, &log);
        self.collector = Some(p);
        let port = format!("sport = :{COLLECTOR_GRPC_PORT}");
        let hub = self.hub.clone();
        eventually(COLLECTOR_STARTUP, "collector listening on :7440", || {
            if let Some(status) = self.collector.as_mut().and_then(Proc::try_status) {
                panic!(
                    "the collector exited during startup ({status}); log:\n{}",
                    process::tail(&log, 60)
                );
            }
            let out = run_in(&hub, &["ss", "-Hltn", &port], Duration::from_secs(10));
            let listening = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if listening.is_empty() {
                Err(format!("nothing listening yet\n{}", describe(&out)))
            } else {
                Ok(())
            }
        });
    }

    /// Points `REACHMAP_CONFIG` at an empty file, so that a config installed
    /// on this machine (/etc/reachmap/*.toml) never reaches the fleet: only
    /// the harness's flags configure it.
    fn isolated_config(&self) -> [(&'static str, PathBuf); 1] {
        let empty = self.dir().join("empty-config.toml");
        if !empty.exists() {
            std::fs::write(&empty, "").expect("cannot write the empty config file");
        }
        [("REACHMAP_CONFIG", empty)]
    }

    /// Stops the collector with SIGTERM (SIGKILL after a grace period) and
    /// returns its exit status.
    pub fn stop_collector(&mut self) -> ExitStatus {
        let mut p = self.collector.take().expect("the collector is not running");
        p.terminate(GRACE)
    }

    /// Kills the collector with SIGKILL and returns its exit status.
    pub fn kill_collector(&mut self) -> ExitStatus {
        let mut p = self.collector.take().expect("the collector is not running");
        p.kill()
    }

    /// Starts `reachmap-agent` in node `i` as `node-<i>`, reporting to the hub's
    /// collector with a 1 s heartbeat, at most 1 s between reconnects, socket
    /// figures and resources read every second, and its own state directory.
    pub fn start_agent(&mut self, i: usize) {
        self.start_agent_with(i, &[]);
    }

    /// `start_agent` with extra flags (they come last, so they win).
    pub fn start_agent_with(&mut self, i: usize, extra: &[&str]) {
        self.start_agent_env(i, extra, &[]);
    }

    /// `start_agent_with`, and more environment variables for the agent
    /// (`PATH`, say).
    pub fn start_agent_env(&mut self, i: usize, extra: &[&str], vars: &[(&'static str, PathBuf)]) {
        let node = self.node(i).clone();
        assert!(
            self.agents[i].is_none(),
            "the agent of {} is already running",
            node.name
        );
        let state_dir = self.dir().join(format!("agent-state-{}", node.name));
        let state_dir = state_dir.to_str().expect("temp dir path is not UTF-8");
        let defaults = [
            ("--collector", COLLECTOR_URL),
            ("--node", node.name.as_str()),
            ("--heartbeat-interval", "1s"),
            ("--reconnect-max", "1s"),
            ("--poll-interval", "1s"),
            ("--socket-poll-interval", "1s"),
            ("--state-dir", state_dir),
        ];
        // A flag given in `extra` replaces its default (a flag given twice
        // is a usage error).
        let mut args: Vec<&str> = Vec::new();
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend_from_slice(extra);
        let label = format!("agent-{}", node.name);
        let log = process::log_path(self.dir(), &label);
        let bin = binary("reachmap-agent");
        let mut env = self.isolated_config().to_vec();
        env.extend(vars.iter().cloned());
        self.agents[i] = Some(Proc::spawn(&label, &node.netns, &bin, &args, &env, &log));
    }

    /// Starts the agent of every node.
    pub fn start_agents(&mut self) {
        for i in 0..self.nodes().len() {
            self.start_agent(i);
        }
    }

    /// Stops the agent of node `i` with SIGTERM (SIGKILL after a grace
    /// period) and returns its exit status.
    pub fn stop_agent(&mut self, i: usize) -> ExitStatus {
        self.take_agent(i).terminate(GRACE)
    }

    /// Kills the agent of node `i` with SIGKILL and returns its exit status.
    pub fn kill_agent(&mut self, i: usize) -> ExitStatus {
        self.take_agent(i).kill()
    }

    fn take_agent(&mut self, i: usize) -> Proc {
        let name = self.node(i).name.clone();
        self.agents[i]
            .take()
            .unwrap_or_else(|| panic!("the agent of {name} is not running"))
    }

    /// Starts any long-running command inside node `i` (a listener, a load
    /// generator...); it is stopped with the fleet. Returns its pid.
    pub fn spawn(&mut self, i: usize, label: &str, args: &[&str]) -> u32 {
        let (program, rest) = args.split_first().expect("spawn: empty command line");
        let netns = self.node(i).netns.clone();
        let log = process::log_path(self.dir(), &format!("{}-{label}", self.node(i).name));
        let p = Proc::spawn(label, &netns, Path::new(program), rest, &[], &log);
        let pid = p.pid();
        self.extra.push(p);
        pid
    }

    /// Runs `reachmap --collector http://198.18.0.1:7440 ARGS...` inside the
    /// hub namespace and returns its output whatever the exit status.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("ip");
        process::scrub_env(&mut cmd);
        cmd.args(["netns", "exec", self.hub()])
            .arg(binary("reachmap"))
            .args(["--collector", COLLECTOR_URL])
            .args(args);
        process::output_with_timeout(cmd, patient(CLI_TIMEOUT))
    }

    /// `reachmap nodes --format json`, parsed. Errors carry the CLI's output.
    pub fn try_nodes_json(&self) -> Result<Value, String> {
        let out = self.cli(&["nodes", "--format", "json"]);
        if !out.status.success() {
            return Err(format!("reachmap nodes failed\n{}", describe(&out)));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "reachmap nodes printed invalid JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `reachmap nodes --format json`, parsed; panics if the CLI fails.
    pub fn nodes_json(&self) -> Value {
        self.try_nodes_json().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The nodes the collector reports, as [`NodeView`]s.
    pub fn try_node_views(&self) -> Result<Vec<NodeView>, String> {
        node_views(&self.try_nodes_json()?)
    }
}
