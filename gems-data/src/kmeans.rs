//! Seeded k-means (k-means++ initialisation, Lloyd iterations), for semantic item identifiers.
//!
//! Deterministic: the same points, options and seed give the same clusters. Distances are squared
//! Euclidean, sums are accumulated in f64, a point equidistant from several centroids joins the
//! lowest-numbered one, and an empty cluster is re-seeded with the point farthest from its centroid.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Options of one k-means run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KMeansOptions {
    /// Number of clusters wanted (capped at the number of points).
    pub clusters: usize,
    /// Upper bound on Lloyd iterations.
    pub max_iterations: usize,
    /// Seed of the k-means++ initialisation.
    pub seed: u64,
}

/// The clustering.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeansResult {
    /// Cluster of each point, in `0..centroids.len()`.
    pub assignments: Vec<usize>,
    /// Cluster centres.
    pub centroids: Vec<Vec<f32>>,
    /// Lloyd iterations run.
    pub iterations: usize,
}

fn squared_distance(left: &[f32], right: &[f32]) -> f64 {
    left.iter()
        .zip(right)
        .map(|(a, b)| f64::from(a - b) * f64::from(a - b))
        .sum()
}

fn nearest(point: &[f32], centroids: &[Vec<f32>]) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (index, centroid) in centroids.iter().enumerate() {
        let distance = squared_distance(point, centroid);
        if distance < best.1 {
            best = (index, distance);
        }
    }
    best
}

/// Clusters `points` (all of the same dimension) into at most `options.clusters` clusters.
pub fn kmeans(points: &[&[f32]], options: &KMeansOptions) -> KMeansResult {
    let clusters = options.clusters.min(points.len()).max(1);
    if points.is_empty() {
        return KMeansResult {
            assignments: Vec::new(),
            centroids: Vec::new(),
            iterations: 0,
        };
    }
    if clusters == points.len() {
        return KMeansResult {
            assignments: (0..points.len()).collect(),
            centroids: points.iter().map(|point| point.to_vec()).collect(),
            iterations: 0,
        };
    }
    let mut centroids = initial_centroids(points, clusters, options.seed);
    let dimensions = points[0].len();
    let mut assignments = vec![usize::MAX; points.len()];
    let mut iterations = 0;
    while iterations < options.max_iterations.max(1) {
        iterations += 1;
        let mut changed = false;
        for (point, assignment) in points.iter().zip(assignments.iter_mut()) {
            let (cluster, _) = nearest(point, &centroids);
            if cluster != *assignment {
                *assignment = cluster;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut sums = vec![vec![0f64; dimensions]; clusters];
        let mut sizes = vec![0usize; clusters];
        for (point, &cluster) in points.iter().zip(&assignments) {
            sizes[cluster] += 1;
            for (sum, value) in sums[cluster].iter_mut().zip(point.iter()) {
                *sum += f64::from(*value);
            }
        }
        for cluster in 0..clusters {
            if sizes[cluster] == 0 {
                continue;
            }
            centroids[cluster] = sums[cluster]
                .iter()
                .map(|sum| (sum / sizes[cluster] as f64) as f32)
                .collect();
        }
        for cluster in 0..clusters {
            if sizes[cluster] > 0 {
                continue;
            }
            // Re-seed an empty cluster with the point farthest from its current centroid.
            // Only points of clusters with two or more members qualify, so no cluster empties.
            let (farthest, _) = points
                .iter()
                .enumerate()
                .filter(|(index, _)| sizes[assignments[*index]] > 1)
                .map(|(index, point)| {
                    (
                        index,
                        squared_distance(point, &centroids[assignments[index]]),
                    )
                })
                .fold((usize::MAX, -1.0), |best, candidate| {
                    if candidate.1 > best.1 {
                        candidate
                    } else {
                        best
                    }
                });
            let previous = assignments[farthest];
            sizes[previous] -= 1;
            sizes[cluster] = 1;
            assignments[farthest] = cluster;
            centroids[cluster] = points[farthest].to_vec();
        }
    }
    KMeansResult {
        assignments,
        centroids,
        iterations,
    }
}

/// k-means++: the first centre uniformly, each next one with probability proportional to the
/// squared distance to the nearest centre chosen so far.
fn initial_centroids(points: &[&[f32]], clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut generator = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen = vec![generator.random_range(0..points.len())];
    let mut distances: Vec<f64> = points
        .iter()
        .map(|point| squared_distance(point, points[chosen[0]]))
        .collect();
    while chosen.len() < clusters {
        let total: f64 = distances.iter().sum();
        let next = if total > 0.0 {
            let mut threshold = generator.random::<f64>() * total;
            let mut pick = distances.len() - 1;
            for (index, distance) in distances.iter().enumerate() {
                if threshold < *distance {
                    pick = index;
                    break;
                }
                threshold -= distance;
            }
            pick
        } else {
            // All remaining points coincide with chosen centres: take the first unused index.
            (0..points.len())
                .find(|index| !chosen.contains(index))
                .expect("fewer clusters than points")
        };
        chosen.push(next);
        for (distance, point) in distances.iter_mut().zip(points) {
            *distance = distance.min(squared_distance(point, points[next]));
        }
    }
    chosen
        .into_iter()
        .map(|index| points[index].to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_well_separated_blobs_and_is_reproducible() {
        let raw: Vec<Vec<f32>> = (0..30)
            .map(|index| {
                let blob = (index % 3) as f32 * 10.0;
                vec![blob + (index as f32) * 0.01, -blob]
            })
            .collect();
        let points: Vec<&[f32]> = raw.iter().map(Vec::as_slice).collect();
        let options = KMeansOptions {
            clusters: 3,
            max_iterations: 50,
            seed: 7,
        };
        let first = kmeans(&points, &options);
        let second = kmeans(&points, &options);
        assert_eq!(first, second);
        for index in 0..30 {
            // Points of the same blob share a cluster; points of different blobs do not.
            assert_eq!(first.assignments[index], first.assignments[index % 3]);
        }
        let mut distinct = first.assignments[..3].to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
    }

    #[test]
    fn never_returns_an_empty_cluster_even_with_duplicate_points() {
        let raw = [
            vec![1.0f32, 1.0],
            vec![1.0, 1.0],
            vec![1.0, 1.0],
            vec![5.0, 5.0],
        ];
        let points: Vec<&[f32]> = raw.iter().map(Vec::as_slice).collect();
        let result = kmeans(
            &points,
            &KMeansOptions {
                clusters: 3,
                max_iterations: 20,
                seed: 1,
            },
        );
        for cluster in 0..result.centroids.len() {
            assert!(
                result.assignments.contains(&cluster),
                "cluster {cluster} is empty: {result:?}"
            );
        }
    }
}
