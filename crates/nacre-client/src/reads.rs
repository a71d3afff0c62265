//! Status requests and reads: one typed call per request, each checking
//! that the reply fits it, and range and prefix reads page by page
//! ([`Pages`]).

use nacre_proto::{
    Bytes, Consistency, KeyEntry, Page, PageItem, RangeQuery, Request, Response, VersionInfo,
};

use crate::{not_found, unexpected, Client, ClientError};

impl Client {
    /// The server's ping reply (its name and version).
    pub async fn ping(&self) -> Result<String, ClientError> {
        match self.execute(Request::Ping).await? {
            Response::Text(s) => Ok(s),
            Response::Unit => Ok(String::new()),
            r => Err(unexpected("ping", r)),
        }
    }

    pub async fn version(&self) -> Result<VersionInfo, ClientError> {
        match self.execute(Request::Version).await? {
            Response::Version(v) => Ok(v),
            r => Err(unexpected("version", r)),
        }
    }

    /// The leader's client address, if the node knows one.
    pub async fn who_master(&self) -> Result<Option<String>, ClientError> {
        match self.execute(Request::WhoMaster).await? {
            Response::Master(m) => Ok(m),
            Response::Text(s) => Ok(Some(s)),
            r => Err(unexpected("who_master", r)),
        }
    }

    pub async fn statistics(&self) -> Result<Vec<(String, String)>, ClientError> {
        match self.execute(Request::Statistics).await? {
            Response::Stats(s) => Ok(s),
            r => Err(unexpected("statistics", r)),
        }
    }

    /// The last log index applied by the node that answers.
    pub async fn get_txid(&self) -> Result<u64, ClientError> {
        match self.execute(Request::GetTxid).await? {
            Response::U64(i) => Ok(i),
            r => Err(unexpected("get_txid", r)),
        }
    }

    // ---- reads ----

    /// The key's value; a missing key is a `NotFound` error (Arakoon).
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Bytes, ClientError> {
        let key = key.into();
        self.get_option(key.clone())
            .await?
            .ok_or_else(|| not_found(&key))
    }

    /// The key's value, `None` if it is missing.
    pub async fn get_option(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClientError> {
        let req = Request::Get {
            consistency: self.consistency,
            key: key.into(),
        };
        match self.execute(req).await {
            Ok(Response::Value(v)) => Ok(v),
            Err(e) if e.is_not_found() => Ok(None),
            Ok(r) => Err(unexpected("get", r)),
            Err(e) => Err(e),
        }
    }

    /// The key with its value and revisions, `None` if it is missing.
    pub async fn get_entry(&self, key: impl Into<Bytes>) -> Result<Option<KeyEntry>, ClientError> {
        let req = Request::GetEntry {
            consistency: self.consistency,
            key: key.into(),
        };
        match self.execute(req).await {
            Ok(Response::Entry(e)) => Ok(e),
            Err(e) if e.is_not_found() => Ok(None),
            Ok(r) => Err(unexpected("get_entry", r)),
            Err(e) => Err(e),
        }
    }

    pub async fn exists(&self, key: impl Into<Bytes>) -> Result<bool, ClientError> {
        let req = Request::Exists {
            consistency: self.consistency,
            key: key.into(),
        };
        match self.execute(req).await? {
            Response::Bool(b) => Ok(b),
            r => Err(unexpected("exists", r)),
        }
    }

    /// Values of all keys, in order; fails `NotFound` naming the first
    /// missing key.
    pub async fn multi_get(&self, keys: Vec<Bytes>) -> Result<Vec<Bytes>, ClientError> {
        let req = Request::MultiGet {
            consistency: self.consistency,
            keys: keys.clone(),
        };
        match self.execute(req).await? {
            Response::Values(v) => Ok(v),
            Response::OptValues(v) => v
                .into_iter()
                .zip(&keys)
                .map(|(v, k)| v.ok_or_else(|| not_found(k)))
                .collect(),
            r => Err(unexpected("multi_get", r)),
        }
    }

    /// Values of all keys, in order, `None` for missing ones.
    pub async fn multi_get_option(
        &self,
        keys: Vec<Bytes>,
    ) -> Result<Vec<Option<Bytes>>, ClientError> {
        let req = Request::MultiGetOption {
            consistency: self.consistency,
            keys,
        };
        match self.execute(req).await? {
            Response::OptValues(v) => Ok(v),
            r => Err(unexpected("multi_get_option", r)),
        }
    }

    /// Keys from `first` to `last` (each bound optional, inclusive or
    /// not), at most `max`, however many pages that takes.
    pub async fn range(
        &self,
        first: Option<Bytes>,
        first_inclusive: bool,
        last: Option<Bytes>,
        last_inclusive: bool,
        max: u32,
    ) -> Result<Vec<Bytes>, ClientError> {
        self.range_query(RangeQuery {
            first,
            first_inclusive,
            last,
            last_inclusive,
            max,
            reverse: false,
        })
        .await
    }

    /// Keys of any [`RangeQuery`], at most its `max`, however many pages
    /// that takes.
    pub async fn range_query(&self, query: RangeQuery) -> Result<Vec<Bytes>, ClientError> {
        let max = query.max;
        self.range_pages(query, Some(max.into())).collect().await
    }

    /// Entries (key, value, revisions) from `first` to `last`, ascending,
    /// at most `max`, however many pages that takes.
    pub async fn range_entries(
        &self,
        first: Option<Bytes>,
        first_inclusive: bool,
        last: Option<Bytes>,
        last_inclusive: bool,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        self.range_entries_query(RangeQuery {
            first,
            first_inclusive,
            last,
            last_inclusive,
            max,
            reverse: false,
        })
        .await
    }

    /// Entries in descending key order, as Arakoon's `rev_range_entries`:
    /// `first` is the high end where the scan starts, `last` the low end
    /// where it stops. (In a [`RangeQuery`] `first` is always the low end;
    /// this call swaps the bounds.)
    pub async fn rev_range_entries(
        &self,
        first: Option<Bytes>,
        first_inclusive: bool,
        last: Option<Bytes>,
        last_inclusive: bool,
        max: u32,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        self.range_entries_query(RangeQuery {
            first: last,
            first_inclusive: last_inclusive,
            last: first,
            last_inclusive: first_inclusive,
            max,
            reverse: true,
        })
        .await
    }

    /// Entries of any [`RangeQuery`], at most its `max`, however many
    /// pages that takes.
    pub async fn range_entries_query(
        &self,
        query: RangeQuery,
    ) -> Result<Vec<KeyEntry>, ClientError> {
        let max = query.max;
        self.range_entries_pages(query, Some(max.into()))
            .collect()
            .await
    }

    /// Keys starting with `prefix`, at most `max`, however many pages that
    /// takes.
    pub async fn prefix_keys(
        &self,
        prefix: impl Into<Bytes>,
        max: u32,
    ) -> Result<Vec<Bytes>, ClientError> {
        self.prefix_keys_pages(prefix, Some(max.into()))
            .collect()
            .await
    }

    /// The keys of `query`, page by page: at most `max` in all (`None`:
    /// the whole range). `query.max` is not used; each page asks for what
    /// is still wanted and the server clamps it.
    pub fn range_pages(&self, query: RangeQuery, max: Option<u64>) -> Pages<Bytes> {
        Pages::new(self, Next::Range(query), max, range_request, key_page)
    }

    /// The entries of `query`, page by page: at most `max` in all
    /// (`None`: the whole range); `query.max` is not used.
    pub fn range_entries_pages(&self, query: RangeQuery, max: Option<u64>) -> Pages<KeyEntry> {
        Pages::new(
            self,
            Next::Range(query),
            max,
            range_entries_request,
            entry_page,
        )
    }

    /// The keys starting with `prefix`, page by page: at most `max` in
    /// all (`None`: every one). The first page is a `PrefixKeys` read, the
    /// next ones `Range` reads of the rest of the prefix.
    pub fn prefix_keys_pages(&self, prefix: impl Into<Bytes>, max: Option<u64>) -> Pages<Bytes> {
        Pages::new(
            self,
            Next::Prefix(prefix.into()),
            max,
            range_request,
            key_page,
        )
    }

    pub async fn key_count(&self) -> Result<u64, ClientError> {
        let req = Request::KeyCount {
            consistency: self.consistency,
        };
        match self.execute(req).await? {
            Response::U64(n) => Ok(n),
            r => Err(unexpected("key_count", r)),
        }
    }
}

/// The request a [`Pages`] sends next.
#[derive(Debug, Clone)]
enum Next {
    /// The first page of a prefix read.
    Prefix(Bytes),
    Range(RangeQuery),
}

/// A range or prefix read, page by page. Each [`Pages::next_page`] is one
/// request, answered by one reply that holds at most `range_results_max`
/// results and one frame's bytes, so the memory a page takes is bounded
/// however large the range. Pages are read one after another, each at the
/// client's consistency on a snapshot of its own: keys written between two
/// pages may or may not appear (as when asking again by hand).
#[derive(Debug)]
pub struct Pages<T> {
    client: Client,
    /// `None` once the read is done.
    next: Option<Next>,
    /// Results still wanted; `None`: all.
    remaining: Option<u64>,
    /// The last page said more keys of the range follow.
    more: bool,
    range_request: fn(Consistency, RangeQuery) -> Request,
    decode: fn(Response) -> Result<Page<T>, ClientError>,
}

impl<T: PageItem> Pages<T> {
    fn new(
        client: &Client,
        next: Next,
        max: Option<u64>,
        range_request: fn(Consistency, RangeQuery) -> Request,
        decode: fn(Response) -> Result<Page<T>, ClientError>,
    ) -> Pages<T> {
        Pages {
            client: client.clone(),
            next: (max != Some(0)).then_some(next),
            remaining: max,
            more: false,
            range_request,
            decode,
        }
    }

    /// The next page, `None` once every wanted result was read. A failed
    /// request can be tried again: the read goes on where it was.
    pub async fn next_page(&mut self) -> Result<Option<Page<T>>, ClientError> {
        let Some(next) = self.next.take() else {
            return Ok(None);
        };
        // One request asks for all that is still wanted, up to what a
        // `max` can say; the server clamps it to its own limit.
        let want = self
            .remaining
            .map_or(u32::MAX, |n| n.min(u32::MAX.into()) as u32);
        let page = match self.fetch(&next, want).await {
            Ok(page) => page,
            Err(e) => {
                self.next = Some(next);
                return Err(e);
            }
        };
        if let Some(n) = &mut self.remaining {
            *n -= page.items.len() as u64;
        }
        self.more = page.more;
        if let Some(last) = page.next_after().filter(|_| self.remaining != Some(0)) {
            let rest = match next {
                Next::Prefix(prefix) => RangeQuery::prefix(prefix, want),
                Next::Range(q) => q,
            };
            self.next = Some(Next::Range(rest.after(last.clone())));
        }
        Ok(Some(page))
    }

    /// One request for the page `next` asks for, at most `want` results.
    async fn fetch(&self, next: &Next, want: u32) -> Result<Page<T>, ClientError> {
        let consistency = self.client.consistency;
        let req = match next {
            Next::Prefix(prefix) => Request::PrefixKeys {
                consistency,
                prefix: prefix.clone(),
                max: want,
            },
            Next::Range(q) => (self.range_request)(
                consistency,
                RangeQuery {
                    max: want,
                    ..q.clone()
                },
            ),
        };
        let page = (self.decode)(self.client.execute(req).await?)?;
        if page.items.len() > want as usize {
            return Err(bad_page(format!(
                "{} results for a max of {want}",
                page.items.len()
            )));
        }
        // An empty page that says more would be asked for again forever.
        if page.more && page.items.is_empty() {
            return Err(bad_page("a page that says more holds no result".into()));
        }
        Ok(page)
    }

    /// Whether the range holds more keys than were read: after the last
    /// page, whether the `max` asked for left some out.
    pub fn more(&self) -> bool {
        self.more
    }

    /// Every wanted result, page after page, in one vector.
    pub async fn collect(mut self) -> Result<Vec<T>, ClientError> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page.items);
        }
        Ok(all)
    }
}

fn bad_page(what: String) -> ClientError {
    ClientError::UnexpectedResponse {
        request: "range page",
        response: what,
    }
}

fn range_request(consistency: Consistency, query: RangeQuery) -> Request {
    Request::Range { consistency, query }
}

fn range_entries_request(consistency: Consistency, query: RangeQuery) -> Request {
    Request::RangeEntries { consistency, query }
}

fn key_page(r: Response) -> Result<Page<Bytes>, ClientError> {
    match r {
        Response::KeyPage(p) => Ok(p),
        r => Err(unexpected("range", r)),
    }
}

fn entry_page(r: Response) -> Result<Page<KeyEntry>, ClientError> {
    match r {
        Response::EntryPage(p) => Ok(p),
        r => Err(unexpected("range_entries", r)),
    }
}
