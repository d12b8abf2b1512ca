//! The sockets reader on a real kernel: each test opens its sockets in a
//! network namespace of its own (loopback only), so the reader sees exactly
//! those. The sockets belong to this test process, so /proc attribution finds
//! this pid.

mod support;

use reachmap_agent::facts::sockets::{BindScope, Listener, Process, Protocol};
use reachmap_agent::inspect::sockets::SocketReader;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use support::{in_new_netns, require_root};

fn inode_of(fd: &impl AsRawFd) -> u64 {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("fd link");
    let link = link.to_str().expect("utf-8");
    reachmap_agent::inspect::sockets::parse_fd_link(link).expect("a socket")
}

fn own_name() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .expect("comm")
        .trim_end()
        .to_string()
}

/// This process holds the listener. (A child another test thread forks may
/// hold it too, between its fork and exec.)
fn is_ours(l: &Listener) -> bool {
    l.processes
        .iter()
        .any(|p| p.pid == std::process::id() && p.name == own_name())
}

fn find(listeners: &[Listener], protocol: Protocol, port: u16) -> Option<&Listener> {
    listeners
        .iter()
        .find(|l| l.protocol == protocol && l.port == port)
}

/// Retries `f` until it returns `Some` or 5 s pass: the kernel finishes
/// loopback handshakes asynchronously.
fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn loopback_listener_with_its_process() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut reader = SocketReader::new("/proc");
        let all = reader.read_listeners().expect("read");
        assert_eq!(all.len(), 1, "{all:#?}");
        let l = &all[0];
        assert_eq!(l.protocol, Protocol::Tcp);
        assert_eq!(l.address.to_string(), "127.0.0.1");
        assert_eq!(l.port, port);
        assert_eq!(l.scope, BindScope::Loopback);
        assert_eq!(l.v6only, None);
        assert_eq!(l.inode, inode_of(&listener));
        assert_eq!(l.uid, 0);
        assert_eq!((l.accept_queue, l.accept_queue_limit), (0, 128));
        assert_eq!(l.interface_index, None);
        assert!(is_ours(l), "{:?}", l.processes);
    });
}

#[test]
fn any_address_and_ipv6_listeners() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let v4 = TcpListener::bind("0.0.0.0:0").expect("bind v4");
        let v6 = TcpListener::bind("[::]:0").expect("bind v6");
        let v6_lo = TcpListener::bind("[::1]:0").expect("bind ::1");
        let port = |l: &TcpListener| l.local_addr().expect("addr").port();
        let all = SocketReader::new("/proc").read_listeners().expect("read");
        assert_eq!(all.len(), 3, "{all:#?}");

        let l = find(&all, Protocol::Tcp, port(&v4)).expect("v4");
        assert_eq!((l.scope, l.v6only), (BindScope::Any, None));
        assert_eq!(l.address.to_string(), "0.0.0.0");

        // std leaves IPV6_V6ONLY at the namespace default (bindv6only=0).
        let l = find(&all, Protocol::Tcp, port(&v6)).expect("v6");
        assert_eq!((l.scope, l.v6only), (BindScope::Any, Some(false)));
        assert_eq!(l.address.to_string(), "::");

        let l = find(&all, Protocol::Tcp, port(&v6_lo)).expect("::1");
        assert_eq!(l.scope, BindScope::Loopback);
        assert_eq!(l.inode, inode_of(&v6_lo));

        let mut sorted = all.clone();
        sorted.sort_by_key(Listener::sort_key);
        assert_eq!(sorted, all);
    });
}

#[test]
fn udp_unconnected_sockets_are_listeners() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let any6 = UdpSocket::bind("[::]:0").expect("bind v6");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind client");
        client
            .connect(server.local_addr().expect("addr"))
            .expect("connect");
        let mut reader = SocketReader::new("/proc");
        let all = reader.read_listeners().expect("read");
        assert_eq!(all.len(), 2, "connected UDP is no listener: {all:#?}");
        let port = |s: &UdpSocket| s.local_addr().expect("addr").port();
        let l = find(&all, Protocol::Udp, port(&server)).expect("server");
        assert_eq!(l.scope, BindScope::Loopback);
        assert_eq!((l.accept_queue, l.accept_queue_limit), (0, 0));
        assert!(is_ours(l), "{:?}", l.processes);
        let l = find(&all, Protocol::Udp, port(&any6)).expect("v6");
        assert_eq!((l.scope, l.v6only), (BindScope::Any, Some(false)));

        let facts = reader.read_all().expect("read all");
        assert_eq!(facts.listeners, all);
        assert_eq!(facts.summary.udp_total, 3);
        assert_eq!(facts.summary.tcp_total, 0);
    });
}

#[test]
fn accept_queue_fills_with_unaccepted_connections() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _clients: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let mut reader = SocketReader::new("/proc");
        let l = eventually(|| {
            let all = reader.read_listeners().expect("read");
            all.into_iter().find(|l| l.accept_queue == 3)
        });
        assert_eq!(l.accept_queue_limit, 128);
        // Waiting connections are established too (the kernel finished the
        // handshake); they count for the listener.
        let facts = reader.read_all().expect("read all");
        assert_eq!(facts.listeners[0].established, 3);
        assert_eq!(facts.summary.tcp_established, 6);
    });
}

#[test]
fn established_connections_per_listener() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
        let idle = TcpListener::bind("[::]:0").expect("bind");
        let addr = busy.local_addr().expect("addr");
        let clients: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let accepted: Vec<TcpStream> = (0..2).map(|_| busy.accept().expect("accept").0).collect();
        // A third connection, closed by its client first: it leaves a
        // TIME_WAIT socket, counted but not established.
        {
            let c = TcpStream::connect(addr).expect("connect");
            let (s, _) = busy.accept().expect("accept");
            drop(c);
            drop(s);
        }
        let mut reader = SocketReader::new("/proc");
        let facts = eventually(|| {
            let facts = reader.read_all().expect("read all");
            (facts.summary.tcp_time_wait == 1).then_some(facts)
        });
        let port = |l: &TcpListener| l.local_addr().expect("addr").port();
        let b = find(&facts.listeners, Protocol::Tcp, port(&busy)).expect("busy");
        assert_eq!(b.established, 2, "{facts:#?}");
        assert_eq!(b.accept_queue, 0);
        let i = find(&facts.listeners, Protocol::Tcp, port(&idle)).expect("idle");
        assert_eq!(i.established, 0);
        assert_eq!(facts.summary.tcp_established, 4);
        assert_eq!(facts.summary.tcp_total, 2 + 4 + 1);

        // read_listeners keeps the last counts without walking established.
        let cheap = reader.read_listeners().expect("read");
        assert_eq!(cheap, facts.listeners);
        drop((clients, accepted));
    });
}

#[test]
fn a_closed_listener_is_gone_and_forgotten() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let mut reader = SocketReader::new("/proc");
        let keep = TcpListener::bind("127.0.0.1:0").expect("bind");
        let gone = TcpListener::bind("127.0.0.1:0").expect("bind");
        let gone_port = gone.local_addr().expect("addr").port();
        assert_eq!(reader.read_listeners().expect("read").len(), 2);
        assert_eq!(reader.proc_scans(), 1);

        // Nothing new: the cache answers, /proc is not walked again.
        for _ in 0..3 {
            assert_eq!(reader.read_listeners().expect("read").len(), 2);
        }
        assert_eq!(reader.proc_scans(), 1);

        drop(gone);
        // Closing is immediate, unless another test thread forked meanwhile
        // and its child holds a copy of the fd until it execs.
        let all = eventually(|| {
            let all = reader.read_listeners().expect("read");
            (all.len() == 1).then_some(all)
        });
        assert!(find(&all, Protocol::Tcp, gone_port).is_none());
        assert_eq!(reader.proc_scans(), 1);

        // A new listener triggers exactly one scan.
        let _new = TcpListener::bind("127.0.0.1:0").expect("bind");
        assert_eq!(reader.read_listeners().expect("read").len(), 2);
        assert_eq!(reader.proc_scans(), 2);
        drop(keep);
    });
}

/// A /proc tree made by hand: the owners of a real socket are whatever the
/// fd links of `--procfs` say, with name and unit from `comm` and `cgroup`.
#[test]
fn owners_come_from_the_procfs_tree() {
    if !require_root() {
        return;
    }
    in_new_netns(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = inode_of(&listener);
        let proc = tempfile::tempdir().expect("tempdir");
        let fake = |pid: u32, name: &str, cgroup: &str| {
            let dir = proc.path().join(pid.to_string());
            std::fs::create_dir_all(dir.join("fd")).expect("mkdir");
            std::fs::write(dir.join("comm"), format!("{name}\n")).expect("comm");
            std::fs::write(dir.join("cgroup"), cgroup).expect("cgroup");
            std::os::unix::fs::symlink("/dev/null", dir.join("fd/0")).expect("fd 0");
            std::os::unix::fs::symlink("pipe:[7]", dir.join("fd/1")).expect("fd 1");
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), dir.join("fd/7"))
                .expect("fd 7");
        };
        fake(4243, "nginx", "0::/system.slice/nginx.service\n");
        fake(4242, "nginx", "0::/system.slice/nginx.service\n");
        fake(
            77,
            "bash",
            "1:name=systemd:/user.slice/user-1000.slice/session-3.scope\n0::/\n",
        );
        std::fs::remove_file(proc.path().join("77/fd/7")).expect("rm");
        std::fs::create_dir_all(proc.path().join("self")).expect("not a pid");

        let mut reader = SocketReader::new(proc.path());
        let all = reader.read_listeners().expect("read");
        let nginx = |pid| Process {
            pid,
            name: "nginx".into(),
            unit: Some("nginx.service".into()),
            cgroup: Some("/system.slice/nginx.service".into()),
        };
        assert_eq!(all[0].processes, vec![nginx(4242), nginx(4243)]);

        // A worker exits: read_all notices and finds who holds it now.
        std::fs::remove_dir_all(proc.path().join("4242")).expect("rm");
        let facts = reader.read_all().expect("read all");
        assert_eq!(facts.listeners[0].processes, vec![nginx(4243)]);
        assert_eq!(reader.proc_scans(), 2);
        reader.read_all().expect("read all");
        assert_eq!(reader.proc_scans(), 2, "cache still valid: no scan");

        // The other one moves it to another fd (dup2 + close): found again.
        let fd = |n: u32| proc.path().join(format!("4243/fd/{n}"));
        std::fs::remove_file(fd(7)).expect("rm");
        std::os::unix::fs::symlink(format!("socket:[{inode}]"), fd(9)).expect("fd 9");
        let facts = reader.read_all().expect("read all");
        assert_eq!(facts.listeners[0].processes, vec![nginx(4243)]);
        assert_eq!(reader.proc_scans(), 3);

        // No /proc at all is an error naming the path.
        let err = SocketReader::new("/nonexistent/proc")
            .read_listeners()
            .expect_err("no procfs");
        assert!(err.to_string().starts_with("/nonexistent/proc: "), "{err}");
    });
}
