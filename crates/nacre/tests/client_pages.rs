//! The Rust client's range and prefix reads against a node with small
//! limits (40 results a page, 48 KiB frames), in process: the plain calls
//! return everything up to the asked max however many pages that takes,
//! `Pages` yields the pages themselves and says when the max left keys
//! out, and a multi-get too large for a frame is a `too_large` error after
//! one request, not an outage after retries.

use bytes::Bytes;
use nacre_client::{Batch, Client, ClientOptions, Op, RangeQuery};
use nacre_server::{RunningServer, ServerConfig};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn keys(n: usize) -> Vec<Bytes> {
    (0..n).map(|i| b(&format!("k{i:03}"))).collect()
}

async fn start(dir: &std::path::Path) -> (RunningServer, Client) {
    let cfg = ServerConfig {
        etcd_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        tick_ms: 20,
        range_results_max: 40,
        frame_size_max_bytes: 48 << 10,
        value_size_max_bytes: 40 << 10,
        ..Default::default()
    };
    let server = nacre_server::start(cfg).await.unwrap();
    let mut opts = ClientOptions::new([server.local_addr().to_string()]);
    opts.limits.frame_size_max_bytes = 48 << 10;
    opts.limits.value_size_max_bytes = 40 << 10;
    let client = Client::connect(opts).await.unwrap();
    (server, client)
}

fn everything() -> RangeQuery {
    RangeQuery {
        first: None,
        first_inclusive: true,
        last: None,
        last_inclusive: false,
        max: u32::MAX,
        reverse: false,
    }
}

/// Requests the node has answered so far (this one included).
async fn requests(c: &Client) -> u64 {
    let stats = c.statistics().await.unwrap();
    let (_, n) = stats.iter().find(|(k, _)| k == "requests").unwrap();
    n.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_calls_return_everything_up_to_the_max_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    let ks = keys(100);
    let batch = Batch {
        guards: vec![],
        ops: ks
            .iter()
            .chain(&[b("a"), b("l")])
            .map(|k| Op::Set(k.clone(), b("v")))
            .collect(),
    };
    c.batch(batch).await.unwrap();

    let all = c.range(None, true, None, true, 1000).await.unwrap();
    assert_eq!(all.len(), 102);
    let some = c.range(Some(b("k")), true, None, true, 70).await.unwrap();
    assert_eq!(some, ks[..70]);
    let rev = c
        .rev_range_entries(Some(b("k099")), true, Some(b("k")), false, 1000)
        .await
        .unwrap();
    let rev: Vec<_> = rev.into_iter().map(|e| e.key).collect();
    assert_eq!(rev, ks.iter().rev().cloned().collect::<Vec<_>>());
    // The rest of a prefix is read as a range that stops at its end ("l"
    // is past it).
    assert_eq!(c.prefix_keys("k", 1000).await.unwrap(), ks);
    assert_eq!(c.prefix_keys("k", 45).await.unwrap(), ks[..45]);

    // Page by page: what each page holds, and whether the max left any out.
    let mut pages = c.prefix_keys_pages("k", None);
    let mut sizes = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        sizes.push(page.items.len());
    }
    assert_eq!((sizes, pages.more()), (vec![40, 40, 20], false));
    let mut pages = c.range_pages(everything(), Some(50));
    let mut sizes = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        sizes.push(page.items.len());
    }
    assert_eq!((sizes, pages.more()), (vec![40, 10], true));
    let exact = c.range_pages(everything(), Some(102)).collect().await;
    assert_eq!(exact.unwrap().len(), 102);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_come_in_pages_and_a_multi_get_of_them_is_too_large_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    let ks = keys(10);
    for k in &ks {
        c.set(k.clone(), vec![b'v'; 20_000]).await.unwrap();
    }
    // Two 20,000-byte values fit in a 48 KiB frame: five pages.
    let mut pages = c.range_entries_pages(everything(), None);
    let mut got = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        assert_eq!(page.items.len(), 2);
        got.extend(page.items.into_iter().map(|e| e.key));
    }
    assert_eq!(got, ks);

    let before = requests(&c).await;
    let e = c.multi_get(ks[..3].to_vec()).await.unwrap_err();
    assert!(e.is_too_large() && !e.is_unavailable(), "{e:?}");
    assert!(e.to_string().contains("frame_size_max_bytes 49152"), "{e}");
    // One multi-get reached the node (and the statistics call): it was
    // not retried.
    assert_eq!(requests(&c).await - before, 2);
    assert_eq!(c.multi_get(ks[..2].to_vec()).await.unwrap().len(), 2);
    server.shutdown().await.unwrap();
}
