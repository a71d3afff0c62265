use super::*;

const DIR: &str = "/db";

fn p(name: &str) -> PathBuf {
    Path::new(DIR).join(name)
}

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn fresh(seed: u64) -> SimVfs {
    let vfs = SimVfs::new(seed);
    vfs.create_dir_all(dir()).unwrap();
    vfs
}

fn read_all(file: &dyn VFile) -> Vec<u8> {
    let mut buf = vec![0; file.len().unwrap() as usize];
    file.read_exact_at(&mut buf, 0).unwrap();
    buf
}

fn fault(result: io::Result<impl Sized>) -> Option<SimFault> {
    match result {
        Ok(_) => None,
        Err(err) => {
            assert_eq!(err.kind(), io::ErrorKind::Other, "{err}");
            SimFault::of(&err)
        }
    }
}

/// Every file's path and contents.
fn snapshot(vfs: &SimVfs) -> Vec<(PathBuf, Vec<u8>)> {
    vfs.paths()
        .into_iter()
        .map(|path| {
            let data = vfs.contents(&path).unwrap();
            (path, data)
        })
        .collect()
}

/// Check the invariant durable + pending == volatile for every file.
fn assert_images_consistent(vfs: &SimVfs) {
    let st = vfs.state.lock();
    for inode in st.inodes.values() {
        let mut image = inode.durable.clone();
        for write in &inode.pending {
            apply_write(&mut image, write.offset, &write.data);
        }
        assert_eq!(image, inode.volatile, "{}", inode.path.display());
    }
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<SimVfs>();
}

#[test]
fn read_your_writes() {
    let vfs = fresh(1);
    let f = vfs.open(&p("a"), true).unwrap();
    assert_eq!(f.len().unwrap(), 0);
    f.write_all_at(b"hello", 0).unwrap();
    f.write_all_at(b"world", 10).unwrap();
    assert_eq!(f.len().unwrap(), 15);
    assert_eq!(read_all(&*f), b"hello\0\0\0\0\0world");
    f.write_all_at(b"J", 0).unwrap();
    let mut buf = [0; 5];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"Jello");

    // A second handle and a clone of the vfs see the same bytes.
    let other = vfs.clone().open(&p("a"), false).unwrap();
    other.read_exact_at(&mut buf, 10).unwrap();
    assert_eq!(&buf, b"world");

    let err = f.read_exact_at(&mut buf, 11).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let err = f.read_exact_at(&mut buf, u64::MAX).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let err = f.write_all_at(b"x", u64::MAX).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

    assert_eq!(vfs.file_len(&p("a")), Some(15));
    assert_eq!(vfs.total_bytes(), 15);
    assert_images_consistent(&vfs);
}

#[test]
fn namespace_basics() {
    let vfs = SimVfs::new(2);
    let err = vfs.open(&p("a"), true).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "no such directory");
    assert_eq!(vfs.list(dir()).unwrap_err().kind(), io::ErrorKind::NotFound);
    vfs.create_dir_all(&p("sub")).unwrap();
    let err = vfs.open(&p("a"), false).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    vfs.open(&p("b"), true).unwrap();
    vfs.open(&p("a"), true).unwrap();
    assert_eq!(vfs.list(dir()).unwrap(), ["a", "b", "sub"]);
    assert_eq!(vfs.paths(), [p("a"), p("b")]);
    vfs.remove(&p("a")).unwrap();
    assert_eq!(
        vfs.remove(&p("a")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(vfs.list(dir()).unwrap(), ["b", "sub"]);
    assert_eq!(vfs.file_len(&p("a")), None);
    assert!(vfs.create_dir_all(&p("b")).is_err(), "b is a file");
}

#[test]
fn synced_data_survives_and_unsynced_does_not() {
    let vfs = fresh(3);
    let f = vfs.open(&p("a"), true).unwrap();
    vfs.sync_dir(dir()).unwrap();
    f.write_all_at(&[1; 1000], 0).unwrap();
    f.sync_data().unwrap();
    f.write_all_at(&[2; 100], 500).unwrap();
    f.write_all_at(&[3; 100], 1000).unwrap();
    assert_eq!(vfs.file_len(&p("a")), Some(1100));
    assert_images_consistent(&vfs);

    vfs.crash_lose_all_unsynced();
    assert_eq!(vfs.contents(&p("a")).unwrap(), vec![1; 1000]);
    let f = vfs.open(&p("a"), false).unwrap();
    assert_eq!(read_all(&*f), vec![1; 1000]);
    assert_images_consistent(&vfs);
}

#[test]
fn planted_skipped_syncs_make_nothing_durable() {
    let vfs = fresh(12);
    let f = vfs.open(&p("a"), true).unwrap();
    vfs.sync_dir(dir()).unwrap();
    f.write_all_at(b"kept", 0).unwrap();
    f.sync_data().unwrap();
    vfs.plant_skipped_syncs(true);
    f.write_all_at(b"lost", 4).unwrap();
    let ops = vfs.ops();
    f.sync_data().unwrap();
    assert_eq!(vfs.ops(), ops + 1, "a skipped sync still counts");
    assert_eq!(read_all(&*f), b"keptlost");
    vfs.crash_lose_all_unsynced();
    assert_eq!(vfs.contents(&p("a")).unwrap(), b"kept");
    assert_images_consistent(&vfs);
}

#[test]
fn undirsynced_create_vanishes_on_lose_all() {
    let vfs = fresh(4);
    let f = vfs.open(&p("a"), true).unwrap();
    f.write_all_at(b"data", 0).unwrap();
    f.sync_data().unwrap();
    vfs.sync_dir(Path::new("/other")).unwrap_err();
    assert_eq!(vfs.paths(), [p("a")]);
    vfs.crash_lose_all_unsynced();
    assert!(vfs.paths().is_empty());
    assert!(vfs.list(dir()).unwrap().is_empty());
    let err = vfs.open(&p("a"), false).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(vfs.state.lock().inodes.is_empty(), "its data was freed");
}

#[test]
fn undirsynced_create_may_survive_a_random_crash() {
    let (mut kept, mut lost) = (0, 0);
    for seed in 0..64 {
        let vfs = fresh(seed);
        let f = vfs.open(&p("a"), true).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        f.sync_data().unwrap();
        vfs.crash();
        match vfs.contents(&p("a")) {
            Some(data) => {
                assert_eq!(data, b"data", "synced data survives with the file");
                kept += 1;
            }
            None => lost += 1,
        }
    }
    assert!(kept > 0 && lost > 0, "kept {kept}, lost {lost}");
}

#[test]
fn undirsynced_remove_is_undone_by_crash() {
    let vfs = fresh(5);
    let f = vfs.open(&p("a"), true).unwrap();
    let g = vfs.open(&p("b"), true).unwrap();
    f.write_all_at(b"keep", 0).unwrap();
    f.sync_data().unwrap();
    g.write_all_at(b"gone", 0).unwrap();
    g.sync_data().unwrap();
    vfs.sync_dir(dir()).unwrap();
    drop(g);

    vfs.remove(&p("a")).unwrap();
    vfs.remove(&p("b")).unwrap();
    vfs.sync_dir(&p("elsewhere")).unwrap_err();
    // A removed file stays usable through an open handle.
    f.write_all_at(b"more", 4).unwrap();
    assert_eq!(read_all(&*f), b"keepmore");
    assert!(vfs.paths().is_empty());
    vfs.open(&p("c"), true).unwrap();

    vfs.crash_lose_all_unsynced();
    assert_eq!(vfs.paths(), [p("a"), p("b")], "both removals undone");
    assert_eq!(vfs.contents(&p("a")).unwrap(), b"keep");
    assert_eq!(vfs.contents(&p("b")).unwrap(), b"gone");

    // A dir-synced removal is permanent and frees the data.
    vfs.remove(&p("b")).unwrap();
    vfs.sync_dir(dir()).unwrap();
    vfs.crash();
    assert_eq!(vfs.paths(), [p("a")]);
    assert_eq!(vfs.state.lock().inodes.len(), 1);
}

#[test]
fn removed_file_is_freed_when_unreferenced() {
    let vfs = fresh(6);
    let f = vfs.open(&p("a"), true).unwrap();
    f.write_all_at(&[7; 4096], 0).unwrap();
    vfs.sync_dir(dir()).unwrap();
    vfs.remove(&p("a")).unwrap();
    vfs.sync_dir(dir()).unwrap();
    assert_eq!(vfs.state.lock().inodes.len(), 1, "the handle keeps it");
    assert_eq!(f.len().unwrap(), 4096);
    drop(f);
    assert!(vfs.state.lock().inodes.is_empty());
    assert_eq!(vfs.total_bytes(), 0);
}

/// Nine mutating operations (indices 0..9) and some that are not.
fn workload(vfs: &SimVfs) -> io::Result<()> {
    vfs.create_dir_all(dir())?;
    let a = vfs.open(&p("a"), true)?; // 0
    vfs.sync_dir(dir())?; // 1
    a.write_all_at(&[1; 1500], 0)?; // 2
    a.sync_data()?; // 3
    let mut buf = [0; 10];
    a.read_exact_at(&mut buf, 0)?;
    let b = vfs.open(&p("b"), true)?; // 4
    vfs.open(&p("b"), false)?;
    b.write_all_at(&[2; 700], 0)?; // 5
    vfs.remove(&p("a"))?; // 6
    vfs.sync_dir(dir())?; // 7
    b.sync_data()?; // 8
    vfs.list(dir())?;
    Ok(())
}

#[test]
fn crash_after_fails_op_n_and_everything_after() {
    let clean = SimVfs::new(7);
    workload(&clean).unwrap();
    let total = clean.ops();
    assert_eq!(total, 9);

    for n in 0..total {
        let vfs = SimVfs::new(7);
        vfs.set_crash_after(Some(n));
        let err = workload(&vfs).unwrap_err();
        assert_eq!(SimFault::of(&err), Some(SimFault::Crash), "n={n}");
        assert_eq!(err.to_string(), "simulated crash");
        assert_eq!(vfs.ops(), n, "exactly n operations took effect");
        assert!(vfs.is_crashed());

        // Every later call of any kind fails.
        assert_eq!(fault(vfs.create_dir_all(dir())), Some(SimFault::Crash));
        assert_eq!(fault(vfs.list(dir())), Some(SimFault::Crash));
        assert_eq!(fault(vfs.open(&p("a"), false)), Some(SimFault::Crash));
        assert_eq!(fault(vfs.open(&p("z"), true)), Some(SimFault::Crash));
        assert_eq!(fault(vfs.remove(&p("b"))), Some(SimFault::Crash));
        assert_eq!(fault(vfs.sync_dir(dir())), Some(SimFault::Crash));
        assert_eq!(fault(vfs.lock(&p("LOCK"))), Some(SimFault::Crash));
        assert_eq!(vfs.ops(), n);

        vfs.crash_lose_all_unsynced();
        assert!(!vfs.is_crashed());
        // What is durable matches how far the workload got.
        let a = vfs.contents(&p("a"));
        let b = vfs.contents(&p("b"));
        match n {
            0 | 1 => assert_eq!((a, b), (None, None)),
            2 | 3 => assert_eq!((a, b), (Some(vec![]), None)),
            4..=6 => assert_eq!((a, b), (Some(vec![1; 1500]), None)),
            7 => assert_eq!((a, b), (Some(vec![1; 1500]), None)),
            _ => assert_eq!((a, b), (None, Some(vec![]))),
        }
        // The vfs works again and the crash point is disarmed.
        workload(&vfs).unwrap();
    }

    // Past the end of the workload nothing happens.
    let vfs = SimVfs::new(7);
    vfs.set_crash_after(Some(total));
    workload(&vfs).unwrap();
    assert!(!vfs.is_crashed());
    // The index is absolute: arm relative to the current count.
    vfs.set_crash_after(Some(vfs.ops() + 1));
    let f = vfs.open(&p("b"), false).unwrap();
    f.sync_data().unwrap();
    assert_eq!(fault(f.sync_data()), Some(SimFault::Crash));
    // Handle calls fail too once crashed, reads included.
    assert_eq!(fault(f.len()), Some(SimFault::Crash));
    assert_eq!(
        fault(f.read_exact_at(&mut [0; 1], 0)),
        Some(SimFault::Crash)
    );
    assert_eq!(fault(f.write_all_at(b"x", 0)), Some(SimFault::Crash));
}

#[test]
fn crash_point_write_leaves_a_sector_multiple_prefix() {
    let mut lens = BTreeSet::new();
    for seed in 0..64 {
        let vfs = fresh(seed);
        let f = vfs.open(&p("a"), true).unwrap();
        vfs.set_crash_after(Some(vfs.ops()));
        assert_eq!(fault(f.write_all_at(&[9; 2000], 0)), Some(SimFault::Crash));
        let data = vfs.contents(&p("a")).unwrap();
        assert_eq!(data.len() % SECTOR_SIZE, 0, "seed {seed}");
        assert!(data.len() < 2000);
        assert!(data.iter().all(|&b| b == 9));
        lens.insert(data.len());
        assert_images_consistent(&vfs);
    }
    assert!(lens.len() > 1, "torn lengths seen: {lens:?}");
    assert!(lens.contains(&0));
}

#[test]
fn crash_tears_unsynced_writes_at_sector_multiples() {
    const BASE: u8 = 0xAA;
    const NEW: u8 = 0x55;
    let (offset, len) = (100usize, 3000usize);
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        let vfs = fresh(seed);
        let f = vfs.open(&p("a"), true).unwrap();
        vfs.sync_dir(dir()).unwrap();
        f.write_all_at(&[BASE; 4096], 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(&[NEW; 3000], offset as u64).unwrap();
        vfs.crash();
        let data = vfs.contents(&p("a")).unwrap();
        assert_eq!(data.len(), 4096);
        let applied = data[offset..].iter().take_while(|&&b| b == NEW).count();
        assert!(
            applied == len || applied % SECTOR_SIZE == 0,
            "seed {seed}: {applied} bytes applied"
        );
        assert!(applied <= len);
        assert!(data[..offset].iter().all(|&b| b == BASE));
        assert!(data[offset + applied..].iter().all(|&b| b == BASE));
        seen.insert(applied);
        assert_images_consistent(&vfs);
    }
    assert!(seen.contains(&0), "{seen:?}");
    assert!(seen.contains(&len), "{seen:?}");
    assert!(seen.iter().any(|&n| n > 0 && n < len), "{seen:?}");
}

#[test]
fn crash_extends_files_only_by_applied_writes() {
    for seed in 0..32 {
        let vfs = fresh(seed);
        let f = vfs.open(&p("a"), true).unwrap();
        vfs.sync_dir(dir()).unwrap();
        f.write_all_at(&[1; 10], 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(&[2; 600], 2000).unwrap();
        vfs.crash();
        let len = vfs.file_len(&p("a")).unwrap();
        assert!([10, 2512, 2600].contains(&len), "seed {seed}: {len}");
    }
}

/// A workload with plenty of unsynced state for a crash to choose from.
fn busy_workload(vfs: &SimVfs) {
    let mut files = Vec::new();
    for i in 0..6u8 {
        let f = vfs.open(&p(&format!("f{i}")), true).unwrap();
        for j in 0..8u64 {
            let len = 100 + 397 * j as usize + i as usize * 13;
            f.write_all_at(&vec![i * 16 + j as u8; len], j * 700)
                .unwrap();
            if (i as u64 + j).is_multiple_of(3) {
                f.sync_data().unwrap();
            }
        }
        if i % 2 == 0 {
            vfs.sync_dir(dir()).unwrap();
        }
        files.push(f);
    }
    vfs.remove(&p("f0")).unwrap();
    vfs.remove(&p("f5")).unwrap();
    assert_images_consistent(vfs);
}

#[test]
fn same_seed_same_ops_same_images() {
    let mut outcomes = BTreeSet::new();
    for seed in 0..8 {
        let one = fresh(seed);
        let two = fresh(seed);
        busy_workload(&one);
        busy_workload(&two);
        assert_eq!(snapshot(&one), snapshot(&two));
        one.crash();
        two.crash();
        let after = snapshot(&one);
        assert_eq!(after, snapshot(&two), "seed {seed}");
        assert_images_consistent(&one);
        // A second crash without new writes changes nothing.
        one.crash();
        assert_eq!(snapshot(&one), after);
        outcomes.insert(after);
    }
    assert!(outcomes.len() > 1, "seeds should differ in their choices");
}

#[test]
fn flip_bit_changes_exactly_one_bit() {
    let vfs = fresh(8);
    let f = vfs.open(&p("a"), true).unwrap();
    vfs.sync_dir(dir()).unwrap();
    let original: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    f.write_all_at(&original, 0).unwrap();
    f.sync_data().unwrap();
    // An unsynced write covering the byte is corrupted too.
    f.write_all_at(&original[500..600], 500).unwrap();

    vfs.flip_bit(&p("a"), 513, 6);
    let check = |data: &[u8]| {
        let diff: Vec<(usize, u8)> = data
            .iter()
            .zip(&original)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| (i, a ^ b))
            .collect();
        assert_eq!(diff, [(513, 1 << 6)]);
    };
    check(&read_all(&*f));
    f.sync_data().unwrap();
    assert_images_consistent(&vfs);
    vfs.crash_lose_all_unsynced();
    check(&vfs.contents(&p("a")).unwrap());
}

#[test]
#[should_panic(expected = "outside the 0 durable bytes")]
fn flip_bit_rejects_unsynced_bytes() {
    let vfs = fresh(8);
    let f = vfs.open(&p("a"), true).unwrap();
    f.write_all_at(b"abc", 0).unwrap();
    vfs.flip_bit(&p("a"), 1, 0);
}

#[test]
fn old_handles_fail_after_crash() {
    let vfs = fresh(9);
    let old = vfs.open(&p("a"), true).unwrap();
    vfs.sync_dir(dir()).unwrap();
    old.write_all_at(b"abc", 0).unwrap();
    old.sync_data().unwrap();
    vfs.crash();

    let stale = Some(SimFault::StaleHandle);
    assert_eq!(fault(old.len()), stale);
    assert_eq!(fault(old.read_exact_at(&mut [0; 1], 0)), stale);
    assert_eq!(fault(old.write_all_at(b"x", 0)), stale);
    assert_eq!(fault(old.sync_data()), stale);

    let new = vfs.open(&p("a"), false).unwrap();
    assert_eq!(read_all(&*new), b"abc");
    drop(old); // must not disturb the new handle's bookkeeping
    vfs.remove(&p("a")).unwrap();
    vfs.sync_dir(dir()).unwrap();
    assert_eq!(read_all(&*new), b"abc", "new handle keeps the inode");
    drop(new);
    assert!(vfs.state.lock().inodes.is_empty());
}

#[test]
fn lock_is_exclusive() {
    let vfs = fresh(10);
    let lock_path = p("LOCK");
    let guard = vfs.lock(&lock_path).unwrap();
    let err = vfs.clone().lock(&lock_path).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(vfs.list(dir()).unwrap(), ["LOCK"], "lock file is created");
    let other = vfs.lock(&p("OTHER")).unwrap();
    drop(guard);
    let again = vfs.lock(&lock_path).unwrap();
    assert_eq!(
        vfs.lock(&lock_path).err().unwrap().kind(),
        io::ErrorKind::WouldBlock
    );

    // A crash releases every lock; stale guards release nothing later.
    vfs.crash();
    let after = vfs.lock(&lock_path).unwrap();
    drop(again);
    drop(other);
    assert_eq!(
        vfs.lock(&lock_path).err().unwrap().kind(),
        io::ErrorKind::WouldBlock
    );
    drop(after);
    vfs.lock(&lock_path).unwrap();
}

#[test]
fn injected_io_errors_do_not_crash() {
    let vfs = fresh(11);
    let f = vfs.open(&p("a"), true).unwrap();
    vfs.sync_dir(dir()).unwrap();
    f.write_all_at(b"abc", 0).unwrap();

    vfs.fail_next_sync(true);
    let err = f.sync_data().unwrap_err();
    assert_eq!(SimFault::of(&err), Some(SimFault::Io));
    assert_eq!(err.to_string(), "simulated I/O error");
    assert!(!vfs.is_crashed());
    let ops = vfs.ops();

    // A failed write has no effect and is not counted.
    vfs.inject_io_error_after(Some(ops));
    assert_eq!(fault(f.write_all_at(b"zzz", 3)), Some(SimFault::Io));
    assert_eq!(vfs.ops(), ops);
    assert_eq!(read_all(&*f), b"abc");
    // Both were one-shot.
    f.write_all_at(b"def", 3).unwrap();
    assert_eq!(read_all(&*f), b"abcdef");

    // The failed sync made nothing durable.
    vfs.crash_lose_all_unsynced();
    assert_eq!(vfs.contents(&p("a")).unwrap(), b"");

    // Failing other operations: remove, sync_dir, create.
    let f = vfs.open(&p("a"), false).unwrap();
    vfs.inject_io_error_after(Some(vfs.ops()));
    assert_eq!(fault(vfs.remove(&p("a"))), Some(SimFault::Io));
    assert_eq!(vfs.paths(), [p("a")]);
    vfs.fail_next_sync(true);
    assert_eq!(fault(vfs.sync_dir(dir())), Some(SimFault::Io));
    vfs.inject_io_error_after(Some(vfs.ops()));
    assert_eq!(fault(vfs.open(&p("b"), true)), Some(SimFault::Io));
    assert_eq!(vfs.paths(), [p("a")]);
    f.sync_data().unwrap();
}
