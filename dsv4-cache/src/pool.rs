//! The page budget of a request's cache: the planner prices a request, the pool it gets is
//! capped at that price, so nothing a request does can allocate more cache than was checked.

/// A page request the pool's budget cannot meet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the KV cache is full: {used} of {budget} bytes in use, a page of {page} more does not fit"
)]
pub struct PoolFull {
    /// Bytes in use.
    pub used: u64,
    /// The budget.
    pub budget: u64,
    /// The page asked for.
    pub page: u64,
}

/// Counts the pages a request's paged streams take and refuses any past its byte budget. It
/// holds no bytes: a backend allocates each page it is granted where its kernels read it.
#[derive(Debug, Clone, Default)]
pub struct BlockPool {
    budget: Option<u64>,
    used: u64,
    pages: u64,
}

impl BlockPool {
    /// A pool without a byte budget.
    pub fn unbounded() -> Self {
        Self::default()
    }

    /// A pool that refuses pages beyond `budget` bytes.
    pub fn with_budget(budget: u64) -> Self {
        Self {
            budget: Some(budget),
            ..Self::default()
        }
    }

    /// Grants a page of `bytes`, or says why the budget cannot.
    pub fn take(&mut self, bytes: usize) -> Result<(), PoolFull> {
        let page = bytes as u64;
        if let Some(budget) = self.budget {
            if self.used + page > budget {
                return Err(PoolFull {
                    used: self.used,
                    budget,
                    page,
                });
            }
        }
        self.used += page;
        self.pages += 1;
        Ok(())
    }

    /// The same pages counted against a new budget (a request resumed from another's state,
    /// priced for its own length).
    pub fn rebudgeted(&self, budget: u64) -> Self {
        Self {
            budget: Some(budget),
            ..self.clone()
        }
    }

    /// Bytes of all pages handed out.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Pages handed out.
    pub fn pages(&self) -> u64 {
        self.pages
    }
}
