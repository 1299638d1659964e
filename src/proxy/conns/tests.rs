use super::*;

const TEST_TIMEOUTS: Timeouts = Timeouts {
    idle: Duration::from_secs(10),
    send: Duration::from_secs(60),
};

#[test]
fn the_sweep_signals_timeouts_once() {
    let conns = Conns::new(4, TEST_TIMEOUTS);
    let fresh = conns.admit().unwrap();
    let idle = conns.admit().unwrap();
    let stuck = conns.admit().unwrap();
    let blocked = conns.admit().unwrap();
    // Everything happens at made-up times well after the start.
    let now = 100_000;
    for s in [&fresh, &idle, &stuck, &blocked] {
        s.state.idle_since.store(now - 100, Ordering::Relaxed);
    }
    idle.state.idle_since.store(now - 10_500, Ordering::Relaxed);
    // Asked to close 1.5 s ago and still idle: a half-sent head.
    stuck
        .state
        .idle_since
        .store(now - 11_500, Ordering::Relaxed);
    stuck
        .state
        .closing_since
        .store(now + 1 - 1_500, Ordering::Relaxed);
    blocked.begin();
    blocked
        .state
        .write_blocked_since
        .store(now + 1 - 61_000, Ordering::Relaxed);
    conns.sweep_at(now);
    let signal = |s: &Slot| s.state.signal.load(Ordering::Relaxed);
    assert_eq!(signal(&fresh), 0);
    assert_eq!(signal(&idle), IDLE);
    assert_eq!(signal(&stuck), DROP);
    assert_eq!(signal(&blocked), SEND_TIMEOUT);
    // Asked to close only just now: not yet.
    fresh
        .state
        .closing_since
        .store(now + 1 - 200, Ordering::Relaxed);
    conns.sweep_at(now);
    assert_eq!(signal(&fresh), 0);
    conns.sweep_at(now + 1_000);
    assert_eq!(signal(&fresh), DROP);
}

#[test]
fn default_cap_leaves_room_for_upstreams() {
    assert_eq!(default_cap(256), 96);
    assert_eq!(default_cap(1024), 480);
    assert_eq!(default_cap(10), 1);
    assert_eq!(default_cap(u64::MAX), 1 << 20);
}

#[test]
fn at_the_cap_the_oldest_idle_go_first_and_busy_ones_stay() {
    let conns = Conns::new(3, TEST_TIMEOUTS);
    let evicted = |s: &Slot| s.state.life.load(Ordering::Relaxed) == EVICTED;
    let a = conns.admit().unwrap();
    let b = conns.admit().unwrap();
    let c = conns.admit().unwrap();
    a.begin(); // busy: never evicted
    b.state.idle_since.store(5, Ordering::Relaxed);
    c.state.idle_since.store(1, Ordering::Relaxed);
    let d = conns.admit().expect("room made by evicting an idle one");
    assert!(evicted(&c), "the oldest idle");
    assert!(evicted(&b), "the batch takes every idle one");
    assert!(!evicted(&a));
    // The second eviction pays for this one: no new scan.
    d.begin();
    let e = conns.admit().expect("paid by b or c, still closing");
    e.begin();
    assert_eq!(conns.open(), 5);
    assert!(
        conns.admit().is_none(),
        "over the cap, nothing left to evict"
    );
    drop((b, c));
    assert_eq!(conns.open(), 3);
    assert_eq!(conns.evicting.load(Ordering::Relaxed), 0);
    // Every connection busy: refused, and the scan is not repeated at once.
    assert!(conns.admit().is_none());
    a.end();
    conns.no_idle_until.store(0, Ordering::Relaxed);
    let f = conns.admit().expect("a is idle again");
    drop((a, f));
    assert_eq!(conns.evicting.load(Ordering::Relaxed), 0);
    assert_eq!(conns.open(), 2);
}

#[test]
fn a_connection_with_a_response_still_going_out_is_not_idle() {
    let conns = Conns::new(1, TEST_TIMEOUTS);
    let a = conns.admit().unwrap();
    assert!(a.state.is_idle());
    a.state.track_write::<()>(&Poll::Pending);
    assert!(!a.state.is_idle());
    assert!(a.state.write_blocked_for(conns.now_ms()).is_some());
    assert!(conns.admit().is_none(), "not evicted while its write waits");
    a.state.track_write(&Poll::Ready(()));
    assert!(a.state.is_idle());
    conns.no_idle_until.store(0, Ordering::Relaxed);
    assert!(conns.admit().is_some());
}

#[test]
fn a_slot_closed_during_an_eviction_leaves_no_count_behind() {
    let conns = Conns::new(1, TEST_TIMEOUTS);
    let a = conns.admit().unwrap();
    a.state.life.store(CLOSED, Ordering::Relaxed);
    assert!(!conns.evict_idle(1), "a closed connection is not evicted");
    assert_eq!(conns.evicting.load(Ordering::Relaxed), 0);
    drop(a);
    assert_eq!(conns.open(), 0);
}
