//! Experiment 7's controls: exact lengths and free parameters must let a
//! provider's couriers tell one person's jobs from another's; shuffled
//! people must show nothing.

use funion_sim::clustering::clustering_rows;

#[test]
fn billing_clustering_controls() {
    let rows = clustering_rows(60, 8, 3_600, 2, &[1]);
    for row in &rows {
        eprintln!(
            "{} | {} | {} | {:?} | control {:.3} | null {:.3}",
            row.name, row.adversary, row.metric, row.value, row.control_value, row.null_value
        );
    }
    let aucs: Vec<_> = rows.iter().filter(|r| r.metric.contains("AUC")).collect();
    assert_eq!(aucs.len(), 3);
    for row in aucs {
        assert!(row.control_value >= 0.9, "{row:?}");
        assert!((0.45..=0.55).contains(&row.null_value), "{row:?}");
    }
}
