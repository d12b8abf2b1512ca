//! A real, throwaway PostgreSQL server for a test: Debian's installed
//! PostgreSQL (the newest under `/usr/lib/postgresql/<ver>/bin`), a fresh
//! cluster in a temporary directory, listening on loopback or on an address
//! inside one of the test's network namespaces, with TLS on.
//!
//! initdb, pg_ctl and the server refuse to run as root, so they run as the
//! `postgres` system user (`runuser -u postgres --`). The cluster has a role
//! `reachmap` (password `reachmap`) owning a database `reachmap`; TCP clients
//! log in with that password (scram-sha-256), over TLS or not, and the
//! harness itself talks to the server as the `postgres` superuser over the
//! unix socket in the temporary directory.
//!
//! Every instance has its own directory and port, so tests run in parallel.
//! Dropping a [`Postgres`] stops the server and removes the directory, also
//! when the test panicked (its log tail is printed first). Directories left
//! by a crashed test process, and servers still running in them, are removed
//! by the next start.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::unistd::User;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::netns::{self, describe};
use crate::patient;
use crate::process::{self, output_with_timeout, tail};

mod cleanup;

use cleanup::{base_dir, is_postgres, kill_server, remove_dead_lock, sweep_stale};

/// The role TCP clients log in as.
pub const USER: &str = "reachmap";
/// The password of [`USER`].
pub const PASSWORD: &str = "reachmap";
/// The database owned by [`USER`], created at the first start.
pub const DATABASE: &str = "reachmap";

/// Where Debian installs the PostgreSQL versions, one directory each.
const PG_ROOT: &str = "/usr/lib/postgresql";
/// The system user the server runs as.
const PG_SYSTEM_USER: &str = "postgres";
/// Name prefix of every instance's directory: `rmt-pg-<pid>-XXXXXX`.
const DIR_PREFIX: &str = "rmt-pg-";
/// How long the server may take to start, stop, or answer one command.
const STARTUP: Duration = Duration::from_secs(30);
/// How many free ports a start tries when another process takes the one
/// picked before the server binds it.
const PORT_ATTEMPTS: usize = 5;
/// Lines of the server log shown in failure messages.
const LOG_TAIL: usize = 40;

/// psql without ~/.psqlrc, without command tags, unaligned tuples only,
/// stopping at the first error.
const PSQL_FLAGS: [&str; 5] = ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"];

/// The `bin` directory of the newest installed PostgreSQL, or why there is
/// none.
pub fn bin_dir() -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(PG_ROOT)
        .map_err(|e| format!("cannot read {PG_ROOT}: {e} (is postgresql installed?)"))?;
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = name
            .split('.')
            .map(|part| part.parse::<u32>().ok())
            .collect::<Option<Vec<u32>>>()
        else {
            continue;
        };
        let bin = entry.path().join("bin");
        if !bin.join("initdb").is_file() {
            continue;
        }
        if best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin)
        .ok_or_else(|| format!("no {PG_ROOT}/<version>/bin/initdb (install postgresql)"))
}

/// Returns true when the tests may start a PostgreSQL server: running as
/// root (see [`crate::require_root`]), the server installed and the
/// `postgres` system user present.
///
/// Missing PostgreSQL under `CI=true` panics, because CI must run these tests
/// rather than skip them; otherwise it prints a skip line and returns false.
pub fn require_postgres() -> bool {
    if !crate::require_root() {
        return false;
    }
    let problem = match (bin_dir(), postgres_user()) {
        (Ok(_), Ok(_)) => return true,
        (Err(e), _) | (_, Err(e)) => e,
    };
    if crate::in_ci() {
        panic!("these tests need PostgreSQL; CI must run them: {problem} (see deploy/common.sh)");
    }
    eprintln!("SKIPPED: this test needs PostgreSQL: {problem} (try `sudo deploy/test.sh`)");
    false
}

/// A running throwaway PostgreSQL server; see the module documentation.
pub struct Postgres {
    dir: Option<TempDir>,
    dir_path: PathBuf,
    ca_pem: PathBuf,
    bin: PathBuf,
    netns: Option<String>,
    addr: IpAddr,
    port: u16,
}

impl Postgres {
    /// Starts a server listening on 127.0.0.1 on a free TCP port.
    pub fn start() -> Postgres {
        Postgres::create(None, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Starts a server inside the existing network namespace `netns`,
    /// listening on `addr` (an address already configured there) on a port
    /// free in that namespace.
    pub fn start_in(netns: &str, addr: &str) -> Postgres {
        let ip: IpAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("Postgres::start_in: bad address {addr:?}: {e}"));
        assert!(
            netns::exists(netns),
            "Postgres::start_in: no network namespace {netns}"
        );
        Postgres::create(Some(netns.to_string()), ip)
    }

    fn create(netns: Option<String>, addr: IpAddr) -> Postgres {
        let bin = bin_dir().unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
        let user = postgres_user().unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
        let base = base_dir();
        sweep_stale(&base, &bin);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(&base)
            .expect("cannot create the PostgreSQL temporary directory");
        let dir_path = dir.path().to_path_buf();
        // The value exists before anything is made, so a failure half-way
        // still stops what was started and removes the directory.
        let mut pg = Postgres {
            dir: Some(dir),
            ca_pem: dir_path.join("tls").join("ca.pem"),
            dir_path,
            bin,
            netns,
            addr,
            port: 0,
        };
        pg.prepare(&user);
        pg.initdb();
        pg.first_start();
        pg.bootstrap();
        pg
    }

    /// The address the server listens on.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The TCP port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The network namespace the server runs in (`None`: the root one).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// `ADDR:PORT`, with an IPv6 address in brackets.
    pub fn host_port(&self) -> String {
        match self.addr {
            IpAddr::V4(ip) => format!("{ip}:{}", self.port),
            IpAddr::V6(ip) => format!("[{ip}]:{}", self.port),
        }
    }

    /// `postgres://reachmap:reachmap@ADDR:PORT/reachmap`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@{}/{DATABASE}",
            self.host_port()
        )
    }

    /// [`Postgres::url`] with `?sslmode=require`. It names no file: the CA
    /// to verify the server with is [`Postgres::ca_pem_path`].
    pub fn url_tls(&self) -> String {
        format!("{}?sslmode=require", self.url())
    }

    /// A libpq key/value connection string for [`USER`] over TCP, with
    /// `extra` (e.g. `sslmode=verify-full sslrootcert=...`) appended.
    pub fn conninfo(&self, extra: &str) -> String {
        format!(
            "host={} port={} user={USER} password={PASSWORD} dbname={DATABASE} {extra}",
            self.addr, self.port
        )
    }

    /// The CA certificate (PEM) that signed the server's certificate, whose
    /// names are the listen address (an IP SAN) and `localhost`.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem
    }

    /// The instance's temporary directory (data, socket, TLS files, log).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir_path.join("server.log")
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path(), LOG_TAIL)
    }

    /// Runs `sql` with `psql -At` as the `postgres` superuser over the unix
    /// socket, in database `reachmap`, and returns its output without the
    /// trailing newline. Panics with psql's stderr unless it succeeds.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql failed: {sql}\n{e}"))
    }

    /// [`Postgres::psql`], returning psql's failure instead of panicking.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.socket_psql(DATABASE, sql)
    }

    /// Runs `sql` with `psql -At -d CONNINFO` (a connection string or URL,
    /// e.g. [`Postgres::url_tls`] or [`Postgres::conninfo`]) from the
    /// server's network namespace, over TCP; returns the output without the
    /// trailing newline, or the failure.
    pub fn psql_conn(&self, conninfo: &str, sql: &str) -> Result<String, String> {
        let mut cmd = self.command(self.netns.as_deref(), false, &self.bin.join("psql"));
        cmd.args(PSQL_FLAGS).args(["-d", conninfo, "-c", sql]);
        psql_result(output_with_timeout(cmd, patient(STARTUP)))
    }

    /// The postmaster's pid, while the server runs.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        is_postgres(pid).then_some(pid)
    }

    /// Whether the server runs.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// Stops the server (`pg_ctl stop -m fast`): clients are disconnected,
    /// the data is kept. Does nothing when it is not running.
    pub fn stop(&mut self) {
        if let Err(e) = self.pg_ctl_stop("fast") {
            panic!("{e}\n--- server log ---\n{}", self.log_tail());
        }
    }

    /// Kills the server as a crash would: SIGKILL to the postmaster and to
    /// every process it started, then waits until they are gone. The data
    /// directory is left as it was; [`Postgres::restart`] recovers it.
    pub fn kill(&mut self) {
        let Some(pid) = self.postmaster_pid() else {
            return;
        };
        let gone = kill_server(pid);
        assert!(
            gone,
            "postgres processes survived SIGKILL (postmaster {pid})"
        );
        remove_dead_lock(&self.data_dir(), &self.socket_dir());
    }

    /// Starts the server again on the same address, port and data; stops it
    /// first (fast) when it runs.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.pg_ctl_start() {
            panic!(
                "cannot restart PostgreSQL on {}: {e}\n--- server log ---\n{}",
                self.host_port(),
                self.log_tail()
            );
        }
        self.wait_ready();
    }

    fn data_dir(&self) -> PathBuf {
        self.dir_path.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir_path.join("sock")
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir_path.join("tls")
    }

    /// The directory layout, owned by postgres, and the TLS files.
    fn prepare(&self, user: &User) {
        let dirs = [self.dir_path.clone(), self.socket_dir(), self.tls_dir()];
        for dir in &dirs {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            own(dir, user, 0o700);
        }
        let tls = self.tls_dir();
        let (ca, cert, key) = certificates(self.addr);
        write_owned(&self.ca_pem, &ca, user, 0o644);
        write_owned(&tls.join("server.pem"), &cert, user, 0o644);
        write_owned(&tls.join("server.key"), &key, user, 0o600);
    }

    fn initdb(&self) {
        let data = self.data_dir();
        let mut cmd = self.command(None, true, &self.bin.join("initdb"));
        cmd.arg("-D")
            .arg(&data)
            .args([
                "-U",
                PG_SYSTEM_USER,
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
        let out = output_with_timeout(cmd, patient(STARTUP));
        assert!(out.status.success(), "initdb failed\n{}", describe(&out));
        // Local connections (the harness, over the socket in the private
        // directory) are trusted; TCP ones, with or without TLS, need the
        // password.
        let hba = "# Written by the reachmap test harness.\n\
                   local all all trust\n\
                   host all all 0.0.0.0/0 scram-sha-256\n\
                   host all all ::/0 scram-sha-256\n";
        write_file(&data.join("pg_hba.conf"), hba);
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", conf.display()));
        text.push_str("\n# The reachmap test harness's settings.\ninclude 'harness.conf'\n");
        write_file(&conf, &text);
    }

    /// `harness.conf` in the data directory: everything that differs from
    /// initdb's defaults, the port included.
    fn write_settings(&self) {
        let tls = self.tls_dir();
        let settings = format!(
            "listen_addresses = '{addr}'\n\
             port = {port}\n\
             unix_socket_directories = '{sock}'\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             fsync = off\n\
             ssl = on\n\
             ssl_cert_file = '{cert}'\n\
             ssl_key_file = '{key}'\n\
             password_encryption = 'scram-sha-256'\n\
             logging_collector = off\n\
             log_destination = 'stderr'\n",
            addr = self.addr,
            port = self.port,
            sock = self.socket_dir().display(),
            cert = tls.join("server.pem").display(),
            key = tls.join("server.key").display(),
        );
        write_file(&self.data_dir().join("harness.conf"), &settings);
    }

    /// Picks a free port and starts; picks another when someone else bound
    /// the first one meanwhile.
    fn first_start(&mut self) {
        for attempt in 1..=PORT_ATTEMPTS {
            self.port = free_port(self.netns.as_deref(), self.addr);
            self.write_settings();
            let log_before = file_len(&self.log_path());
            match self.pg_ctl_start() {
                Ok(()) => {
                    self.wait_ready();
                    return;
                }
                Err(e) => {
                    let log = std::fs::read(self.log_path()).unwrap_or_default();
                    let new = String::from_utf8_lossy(log.get(log_before..).unwrap_or_default());
                    if attempt < PORT_ATTEMPTS && new.contains("Address already in use") {
                        eprintln!("harness: port {} was taken; trying another", self.port);
                        continue;
                    }
                    panic!(
                        "cannot start PostgreSQL on {}: {e}\n--- server log ---\n{}",
                        self.host_port(),
                        self.log_tail()
                    );
                }
            }
        }
    }

    /// Creates the role and database clients use.
    fn bootstrap(&self) {
        let role = format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'");
        let db = format!("CREATE DATABASE {DATABASE} OWNER {USER}");
        // Separate statements: CREATE DATABASE cannot run in the implicit
        // transaction of a multi-statement `-c`.
        for sql in [role, db] {
            if let Err(e) = self.socket_psql("postgres", &sql) {
                panic!("cannot set up PostgreSQL: {sql}\n{e}");
            }
        }
    }

    fn socket_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let mut cmd = self.command(None, false, &self.bin.join("psql"));
        cmd.args(PSQL_FLAGS).arg("-h").arg(self.socket_dir()).args([
            "-p",
            &port,
            "-U",
            PG_SYSTEM_USER,
            "-d",
            database,
            "-c",
            sql,
        ]);
        psql_result(output_with_timeout(cmd, patient(STARTUP)))
    }

    /// `pg_ctl start -w` (in the namespace): returns once the server
    /// accepts connections, or why it does not.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let timeout = patient(STARTUP);
        let secs = timeout.as_secs().max(1).to_string();
        let mut cmd = self.command(self.netns.as_deref(), true, &self.bin.join("pg_ctl"));
        cmd.arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", &secs]);
        let out = output_with_timeout(cmd, timeout + Duration::from_secs(5));
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("pg_ctl start failed\n{}", describe(&out)))
        }
    }

    /// `pg_ctl stop -m MODE -w`; Ok when the server is not running.
    fn pg_ctl_stop(&self, mode: &str) -> Result<(), String> {
        if !self.is_running() {
            return Ok(());
        }
        let timeout = patient(STARTUP);
        let secs = timeout.as_secs().max(1).to_string();
        let mut cmd = self.command(None, true, &self.bin.join("pg_ctl"));
        cmd.arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", &secs]);
        let out = output_with_timeout(cmd, timeout + Duration::from_secs(5));
        if out.status.success() || !self.is_running() {
            Ok(())
        } else {
            Err(format!("pg_ctl stop -m {mode} failed\n{}", describe(&out)))
        }
    }

    /// Polls `pg_isready` over TCP from the server's namespace.
    fn wait_ready(&self) {
        let timeout = patient(STARTUP);
        let start = Instant::now();
        let host = self.addr.to_string();
        let port = self.port.to_string();
        loop {
            let mut cmd = self.command(self.netns.as_deref(), false, &self.bin.join("pg_isready"));
            cmd.args([
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                PG_SYSTEM_USER,
                "-d",
                "postgres",
            ])
            .args(["-t", "2"]);
            let out = output_with_timeout(cmd, Duration::from_secs(10));
            if out.status.success() {
                return;
            }
            if start.elapsed() >= timeout || !self.is_running() {
                panic!(
                    "PostgreSQL on {} not ready after {:.1}s (running: {})\n{}\
                     --- server log ---\n{}",
                    self.host_port(),
                    start.elapsed().as_secs_f64(),
                    self.is_running(),
                    describe(&out),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `program`, run in `netns` (via `ip netns exec`) and as the postgres
    /// system user (via `runuser`) as asked, from the instance directory,
    /// without the caller's `PG*` and `REACHMAP_*` variables.
    fn command(&self, netns: Option<&str>, as_postgres: bool, program: &Path) -> Command {
        let mut words: Vec<&std::ffi::OsStr> = Vec::new();
        if let Some(ns) = netns {
            words.extend(["ip", "netns", "exec", ns].map(std::ffi::OsStr::new));
        }
        if as_postgres {
            words.extend(["runuser", "-u", PG_SYSTEM_USER, "--"].map(std::ffi::OsStr::new));
        }
        words.push(program.as_os_str());
        let mut cmd = Command::new(words[0]);
        cmd.args(&words[1..]).current_dir(&self.dir_path);
        process::scrub_env(&mut cmd);
        scrub_pg_env(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "10");
        cmd
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        if failing {
            eprintln!(
                "\n===== tail of the PostgreSQL log {} =====\n{}",
                self.log_path().display(),
                self.log_tail()
            );
        }
        let mut errors = Vec::new();
        if let Err(e) = self.pg_ctl_stop("immediate") {
            errors.push(e);
        }
        if let Some(pid) = self.postmaster_pid() {
            if kill_server(pid) {
                remove_dead_lock(&self.data_dir(), &self.socket_dir());
            } else {
                errors.push(format!(
                    "postgres processes survived SIGKILL (postmaster {pid})"
                ));
            }
        }
        if let Some(dir) = self.dir.take()
            && let Err(e) = dir.close()
        {
            errors.push(format!("cannot remove {}: {e}", self.dir_path.display()));
        }
        if !errors.is_empty() {
            let msg = format!("PostgreSQL teardown failed:\n{}", errors.join("\n"));
            if failing {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

fn postgres_user() -> Result<User, String> {
    match User::from_name(PG_SYSTEM_USER) {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(format!("no `{PG_SYSTEM_USER}` system user")),
        Err(e) => Err(format!("cannot look up the `{PG_SYSTEM_USER}` user: {e}")),
    }
}

/// A port nothing listens on at `addr`, in `netns` (by binding port 0 there
/// from a thread that joined the namespace).
fn free_port(netns: Option<&str>, addr: IpAddr) -> u16 {
    let bind = move || -> Result<u16, String> {
        let listener = TcpListener::bind((addr, 0)).map_err(|e| format!("bind {addr}: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        Ok(port)
    };
    let result = match netns {
        None => bind(),
        Some(ns) => {
            let path = Path::new("/run/netns").join(ns);
            let file =
                File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
            std::thread::spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
                bind()
            })
            .join()
            .expect("port probe thread panicked")
        }
    };
    result.unwrap_or_else(|e| {
        panic!(
            "no free port for PostgreSQL on {addr} in {}: {e}",
            netns.unwrap_or("the root namespace")
        )
    })
}

fn scrub_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

fn psql_result(out: Output) -> Result<String, String> {
    if out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.trim_end_matches('\n').to_string())
    } else {
        Err(describe(&out))
    }
}

/// A CA and a server certificate for `addr` and `localhost`, as PEM:
/// `(ca, server certificate, server key)`.
fn certificates(addr: IpAddr) -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("cannot generate the CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "reachmap test PostgreSQL CA");
    let ca_cert = ca.self_signed(&ca_key).expect("cannot sign the CA");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("cannot generate the server key");
    let mut params = CertificateParams::new(vec![addr.to_string(), "localhost".to_string()])
        .expect("server certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, "reachmap test PostgreSQL");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params
        .signed_by(&key, &issuer)
        .expect("cannot sign the server certificate");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

fn own(path: &Path, user: &User, mode: u32) {
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

fn write_owned(path: &Path, contents: &str, user: &User, mode: u32) {
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    own(path, user, mode);
}

/// Writes a file in the data directory, owned like the directory (postgres).
fn write_file(path: &Path, contents: &str) {
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let parent = path.parent().unwrap_or(Path::new("/"));
    let meta = std::fs::metadata(parent)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", parent.display()));
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))
        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
}

fn file_len(path: &Path) -> usize {
    std::fs::metadata(path).map_or(0, |m| usize::try_from(m.size()).unwrap_or(usize::MAX))
}
