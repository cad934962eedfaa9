use super::*;

fn command() -> Command {
    Command {
        path: b"/bin/sh".to_vec(),
        argv: vec![b"/bin/sh".to_vec(), b"-c".to_vec(), b"exec cat".to_vec()],
        envp: vec![b"A=1".to_vec(), Vec::new()],
        cwd: Some(b"/tmp".to_vec()),
        stdin: true,
        stdout: false,
        use_stdio: true,
        stderr: Stderr::Message,
        privileges: Privileges { uid: Some((65534, Some(65534))), gid: Some(7), nice: Some(-3), rlimits: vec![(7, 10, u64::MAX)], umask: Some(0o27) },
        in_cgroup: true,
        hold: true,
        watchdog_pid: true,
        pty: true,
        join: 2,
    }
}

fn one(buf: &[u8]) -> &[u8] {
    let (body, used) = next_message(buf).expect("valid").expect("complete");
    assert_eq!(used, buf.len());
    body
}

#[test]
fn requests_survive_the_round_trip() {
    for request in [Request::Spawn(command()), Request::Spawn(Command::default()), Request::Reap(4_000_000), Request::Arm { id: 7, after: 4_000_001, command: command() }, Request::Disarm(u32::MAX)] {
        let mut buf = Vec::new();
        request.encode(&mut buf).expect("encodes");
        assert_eq!(Request::decode(one(&buf)).expect("decodes"), request);
    }
}

#[test]
fn replies_survive_the_round_trip() {
    for reply in [Reply::Started { pid: 12 }, Reply::Failed { errno: libc::ENOENT, step: 8 }, Reply::Exited { pid: 9, status: 0x8b }, Reply::Restarted { id: 3, pid: 44 }, Reply::RestartFailed { id: 5, errno: libc::EACCES, step: 2 }, Reply::NotRestarted { id: u32::MAX }] {
        let mut buf = Vec::new();
        reply.encode(&mut buf);
        assert_eq!(Reply::decode(one(&buf)).expect("decodes"), reply);
    }
}

#[test]
fn a_partial_message_waits_for_the_rest() {
    let mut buf = Vec::new();
    Request::Spawn(command()).encode(&mut buf).expect("encodes");
    for cut in 0..buf.len() {
        assert!(next_message(&buf[..cut]).expect("valid so far").is_none());
    }
}

#[test]
fn every_truncation_or_corruption_is_an_error_not_a_panic() {
    let mut buf = Vec::new();
    Request::Spawn(command()).encode(&mut buf).expect("encodes");
    let body = one(&buf).to_vec();
    for cut in 0..body.len() {
        assert!(Request::decode(&body[..cut]).is_err(), "cut at {cut}");
    }
    for i in 0..body.len() {
        let mut bent = body.clone();
        bent[i] ^= 0xff;
        let _ = Request::decode(&bent);
    }
    let mut long = body.clone();
    long.push(0);
    assert!(Request::decode(&long).is_err());
    assert!(next_message(&u32::MAX.to_be_bytes()).is_err());
}

#[test]
fn a_request_too_large_for_the_other_end_is_not_written_at_all() {
    // The body of a spawn with one argument of `n` bytes and nothing else.
    let with_arg = |n: usize| Request::Spawn(Command { argv: vec![vec![0; n]], ..Command::default() });
    let overhead = 29; // the fixed fields (the last: the count of v1 cgroups to join)
    let mut buf = vec![7, 7];
    let e = with_arg(MAX_MESSAGE - overhead + 1).encode(&mut buf).expect_err("one byte too long");
    assert_eq!(e.raw_os_error(), Some(libc::E2BIG));
    assert_eq!(buf, [7, 7], "nothing of it is left");
    let e = with_arg(u32::MAX as usize + 10).encode(&mut buf).expect_err("longer than a length field says");
    assert_eq!(e.raw_os_error(), Some(libc::E2BIG));
    assert_eq!(buf, [7, 7]);
    // Exactly the limit goes, and the other end takes it.
    with_arg(MAX_MESSAGE - overhead).encode(&mut buf).expect("fits");
    let (body, used) = next_message(&buf[2..]).expect("valid").expect("complete");
    assert_eq!((body.len(), used), (MAX_MESSAGE, buf.len() - 2));
    assert!(matches!(Request::decode(body), Ok(Request::Spawn(c)) if c.argv[0].len() == MAX_MESSAGE - overhead));
}
