//! Ranking metrics for queries with one relevant result each: the chunk that holds the
//! documented definition.

use serde::Serialize;

/// Means over a set of queries, from the rank (1-based) at which each found its target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub queries: usize,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    pub mrr_at_10: f64,
    pub ndcg_at_10: f64,
}

impl Metrics {
    /// `ranks[i]`: where query i's target appeared, `None` when not in the results.
    pub fn from_ranks(ranks: &[Option<usize>]) -> Metrics {
        if ranks.is_empty() {
            return Metrics::default();
        }
        let n = ranks.len() as f64;
        let mean = |score: &dyn Fn(usize) -> f64| -> f64 {
            ranks.iter().map(|r| r.map_or(0.0, score)).sum::<f64>() / n
        };
        let within = |k: usize| move |rank: usize| if rank <= k { 1.0 } else { 0.0 };
        Metrics {
            queries: ranks.len(),
            recall_at_1: mean(&within(1)),
            recall_at_5: mean(&within(5)),
            recall_at_10: mean(&within(10)),
            mrr_at_10: mean(&|rank| if rank <= 10 { 1.0 / rank as f64 } else { 0.0 }),
            // One relevant item: the ideal DCG is 1, so nDCG is the discount at its rank.
            ndcg_at_10: mean(&|rank| {
                if rank <= 10 {
                    1.0 / ((rank + 1) as f64).log2()
                } else {
                    0.0
                }
            }),
        }
    }
}

/// What came before a query's definition: the share of queries where a chunk of a test file,
/// or a chunk that names the definition's symbol without holding it (a caller, an import, a
/// re-export), ranked above the definition (anywhere in the results when it missed them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Outranked {
    pub queries: usize,
    pub by_test: f64,
    pub by_mention: f64,
}

/// One query's results before its definition, as [`Outranked`] counts them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ahead {
    pub test: bool,
    pub mention: bool,
}

impl Outranked {
    pub fn from_queries(ahead: &[Ahead]) -> Outranked {
        let share = |count: usize| count as f64 / ahead.len().max(1) as f64;
        Outranked {
            queries: ahead.len(),
            by_test: share(ahead.iter().filter(|a| a.test).count()),
            by_mention: share(ahead.iter().filter(|a| a.mention).count()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_ranks() {
        let m = Metrics::from_ranks(&[Some(1), Some(3), None, Some(12)]);
        assert_eq!(m.queries, 4);
        assert!((m.recall_at_1 - 0.25).abs() < 1e-12);
        assert!((m.recall_at_5 - 0.5).abs() < 1e-12);
        assert!((m.recall_at_10 - 0.5).abs() < 1e-12);
        assert!((m.mrr_at_10 - (1.0 + 1.0 / 3.0) / 4.0).abs() < 1e-12);
        assert!(
            (m.ndcg_at_10 - (1.0 + 0.5) / 4.0).abs() < 1e-12,
            "log2(4) = 2"
        );
        assert_eq!(Metrics::from_ranks(&[]), Metrics::default());
    }

    #[test]
    fn outranked_shares() {
        let ahead = [
            Ahead {
                test: true,
                mention: true,
            },
            Ahead {
                test: false,
                mention: true,
            },
            Ahead::default(),
            Ahead::default(),
        ];
        let o = Outranked::from_queries(&ahead);
        assert_eq!(o.queries, 4);
        assert!((o.by_test - 0.25).abs() < 1e-12);
        assert!((o.by_mention - 0.5).abs() < 1e-12);
    }
}
