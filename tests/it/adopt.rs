//! Prepared frames (`queue/adopt.rs`, `daemon/inbox/`): `enqueue`'s items are moved into
//! the spool, not copied; their metadata is the daemon's; what cannot be adopted is left
//! as it was, and an item stamped by a daemon that stopped before the rename is taken.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgecap::config::MetaValue;
use edgecap::daemon::inbox::{Taker, hand_over, inbox_dir};
use edgecap::frame::{CameraTable, FrameMeta};
use edgecap::queue::Queue;
use edgecap::queue::adopt::{AdoptError, Prepared, write_prepared_unsynced};
use edgecap::queue::spool::{self, SpoolError};

use crate::support::TestConfig;

fn jpeg(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([seed, (x * 4) as u8, (y * 5) as u8])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(&img)
        .unwrap();
    out
}

fn meta(name: &str) -> FrameMeta {
    let mut custom = BTreeMap::new();
    custom.insert("site".to_string(), MetaValue::Str("north".into()));
    FrameMeta {
        filename: name.into(),
        mime: "image/jpeg".into(),
        camera: "cam0".into(),
        groups: vec!["main".into()],
        custom: custom.into(),
        ..FrameMeta::default()
    }
}

/// (inode, name) of every file in `dir`.
fn inodes(dir: &Path) -> Vec<(u64, String)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.metadata().unwrap().ino(),
                e.file_name().to_string_lossy().into_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A loaded config whose queue is under `dir`, and the queue opened.
fn setup(dir: &Path) -> (edgecap::config::Config, Arc<Queue>) {
    let cfg = TestConfig::nexus(dir, "http://127.0.0.1:9");
    let path = cfg.write(&dir.join("edgecap.toml"));
    let config = edgecap::config::load(&path).unwrap();
    let (queue, _) = Queue::open(&config.queue).unwrap();
    (config, Arc::new(queue))
}

#[test]
fn a_prepared_frame_is_moved_into_the_spool_with_its_new_metadata_not_copied() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, queue) = setup(tmp.path());
    let inbox = tmp.path().join("in");
    std::fs::create_dir(&inbox).unwrap();
    let item = inbox.join("x.frame");
    let img = jpeg(7);
    write_prepared_unsynced(&item, br#"{"placeholder":true}"#, 1000, &img).unwrap();
    let ino = std::fs::metadata(&item).unwrap().ino();

    let mut group = queue.group();
    let seq = group
        .adopt(Prepared::open(&item).unwrap(), &meta("dev_cam0_1.jpg"))
        .unwrap();
    let committed = group.commit();
    assert_eq!(committed.frames, vec![(seq, "dev_cam0_1.jpg".to_string())]);

    assert!(!item.exists(), "the item left the inbox");
    let spooled = queue.dir().join("spool").join(format!("{seq:020}.frame"));
    assert_eq!(
        std::fs::metadata(&spooled).unwrap().ino(),
        ino,
        "the same file, renamed: the image was not copied"
    );
    let (h, m, image) = spool::read_frame_of(&spooled, seq).unwrap();
    assert_eq!(
        m,
        meta("dev_cam0_1.jpg"),
        "the daemon's metadata, not the placeholder"
    );
    assert_eq!(image, img, "the image as written, its checksum verified");
    assert_eq!(h.meta_len, 1000, "the metadata kept its room (padded)");
    assert_eq!(queue.stats().pending.frames, 1);
}

#[test]
fn metadata_that_outgrows_the_room_leaves_the_item_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, queue) = setup(tmp.path());
    let item = tmp.path().join("x.frame");
    let placeholder = br#"{"p":1}"#;
    write_prepared_unsynced(&item, placeholder, 40, &jpeg(1)).unwrap();
    let before = std::fs::read(&item).unwrap();

    let mut group = queue.group();
    match group.adopt(
        Prepared::open(&item).unwrap(),
        &meta("a_rather_long_name.jpg"),
    ) {
        Err(AdoptError::NoRoom { room: 40, len }) => assert!(len > 40),
        other => panic!(
            "expected NoRoom, got {:?}",
            other.map_err(|e| e.to_string())
        ),
    }
    assert_eq!(group.commit().frames.len(), 0);
    assert_eq!(std::fs::read(&item).unwrap(), before, "untouched");
    assert_eq!(Prepared::open(&item).unwrap().meta(), placeholder);
    assert_eq!(queue.stats().pending.frames, 0);
}

#[test]
fn a_file_that_is_not_a_prepared_frame_is_told_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let item = tmp.path().join("x.frame");
    std::fs::write(&item, b"EDGECAPF but nothing after").unwrap();
    assert!(matches!(
        Prepared::open(&item),
        Err(SpoolError::Corrupt { .. })
    ));
    let mut bytes = Vec::new();
    write_prepared_unsynced(&tmp.path().join("y.frame"), b"{}", 100, &jpeg(2)).unwrap();
    bytes.extend(std::fs::read(tmp.path().join("y.frame")).unwrap());
    bytes[40] ^= 0x20; // inside the metadata: the header checksum no longer holds
    std::fs::write(&item, &bytes).unwrap();
    assert!(matches!(
        Prepared::open(&item),
        Err(SpoolError::Corrupt { .. })
    ));
}

#[test]
fn the_taker_adopts_what_enqueue_hands_over_and_takes_a_stamped_leftover_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, queue) = setup(tmp.path());
    let cameras = CameraTable::new("dev", &config.cameras);
    let mut taker = Taker::new(Arc::clone(&queue), "dev".into(), cameras).unwrap();
    let inbox = inbox_dir(queue.dir());
    let folder = tmp.path().join("images");
    std::fs::create_dir(&folder).unwrap();
    let files: Vec<PathBuf> = (0..3u8)
        .map(|i| {
            let p = folder.join(format!("img{i}.jpg"));
            std::fs::write(&p, jpeg(i * 40)).unwrap();
            p
        })
        .collect();

    let done = hand_over(&config, 0, &files, false, None).unwrap();
    assert_eq!(done.frames, 3);
    let handed = inodes(&inbox);
    assert_eq!(handed.len(), 3);
    assert!(
        handed.iter().all(|(_, n)| n.ends_with(".frame")),
        "{handed:?}"
    );

    assert_eq!(taker.round().unwrap(), 3);
    assert!(inodes(&inbox).is_empty(), "the inbox is emptied");
    let spooled = inodes(&queue.dir().join("spool"));
    assert_eq!(
        spooled.iter().map(|(i, _)| *i).collect::<HashSet<_>>(),
        handed.iter().map(|(i, _)| *i).collect::<HashSet<_>>(),
        "every item moved into the spool, none copied"
    );
    for (_, name) in &spooled {
        let (_, m) = spool::read_meta(&queue.dir().join("spool").join(name)).unwrap();
        assert!(
            m.filename.contains("dev"),
            "named by the daemon: {}",
            m.filename
        );
        let src = match &m.custom.to_map()["source_file"] {
            MetaValue::Str(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert!(
            files.iter().any(|f| f.display().to_string() == src),
            "{src}"
        );
        assert_eq!(
            m.custom.to_map()["site"],
            MetaValue::Str("north".into()),
            "the camera's own"
        );
    }

    // Handed over again: the same content is recognised (by the digest in the name).
    let again = hand_over(&config, 0, &files, false, None).unwrap();
    assert_eq!((again.frames, again.duplicates.len()), (0, 3));

    // A daemon that stamped an item and stopped before its commit: the item stays in the
    // inbox with the daemon's metadata, and the next round takes it as it is.
    let extra = folder.join("img9.jpg");
    std::fs::write(&extra, jpeg(99)).unwrap();
    hand_over(&config, 0, std::slice::from_ref(&extra), false, None).unwrap();
    let (_, name) = inodes(&inbox).pop().unwrap();
    let mut group = queue.group();
    group
        .adopt(
            Prepared::open(&inbox.join(&name)).unwrap(),
            &meta("stamped_once.jpg"),
        )
        .unwrap();
    drop(group);
    assert!(
        inbox.join(&name).exists(),
        "a dropped group leaves the item"
    );
    assert_eq!(taker.round().unwrap(), 1);
    assert!(inodes(&inbox).is_empty());
    let names: Vec<String> = inodes(&queue.dir().join("spool"))
        .iter()
        .map(|(_, n)| {
            let (_, m) = spool::read_meta(&queue.dir().join("spool").join(n)).unwrap();
            m.filename
        })
        .collect();
    assert!(names.contains(&"stamped_once.jpg".to_string()), "{names:?}");
    assert_eq!(queue.stats().pending.frames, 4);

    // "Stamped" metadata from another writer of the inbox is held to what a daemon
    // writes: a name that leaves the folder is quarantined, not queued.
    let evil = serde_json::to_vec(&meta("../escape.jpg")).unwrap();
    let hidden = inbox.join(".evil.frame");
    write_prepared_unsynced(&hidden, &evil, 4000, &jpeg(5)).unwrap();
    std::fs::rename(&hidden, inbox.join("evil.frame")).unwrap();
    assert_eq!(taker.round().unwrap(), 0);
    assert!(inodes(&inbox).is_empty());
    assert!(queue.dir().join("quarantine").join("evil.frame").exists());
    assert_eq!(queue.stats().pending.frames, 4);
}

#[test]
fn an_inbox_on_another_filesystem_is_copied_from_not_adopted() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, queue) = setup(tmp.path());
    let cameras = CameraTable::new("dev", &config.cameras);
    let mut taker = Taker::new(Arc::clone(&queue), "dev".into(), cameras).unwrap();
    let inbox = inbox_dir(queue.dir());
    assert!(queue.can_adopt_from(&inbox));
    // A mount over the inbox: a rename into the spool would fail at every try.
    let _fs = crate::support::Tmpfs::mount(&inbox, "16m");
    assert!(!queue.can_adopt_from(&inbox));
    let img = tmp.path().join("one.jpg");
    std::fs::write(&img, jpeg(3)).unwrap();
    assert_eq!(
        hand_over(&config, 0, &[img], false, None).unwrap().frames,
        1
    );

    assert_eq!(taker.round().unwrap(), 1, "taken by a copy");
    assert!(inodes(&inbox).is_empty(), "and the item deleted");
    let spooled = inodes(&queue.dir().join("spool"));
    assert_eq!(spooled.len(), 1);
    let (_, m, image) = spool::read_frame(&queue.dir().join("spool").join(&spooled[0].1)).unwrap();
    assert_eq!(image, jpeg(3));
    assert!(m.filename.contains("dev"));
}
