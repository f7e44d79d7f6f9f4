"""k-means, nearest-centroid routing and purity on hand-made points with known answers."""

import numpy as np
import pytest

from fedrouter.clustering import (
    allowed_clusters,
    cluster_purity,
    global_assignment,
    kmeans,
    nearest,
    nearest_two,
    route,
)


def blobs(seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(scale=0.3, size=(20, 2)) for c in centers])
    return points, np.repeat([0, 1, 2], 20)


def test_kmeans_recovers_three_blobs():
    points, truth = blobs()
    result = kmeans(points, 3, seed=1)
    assert cluster_purity(result.labels, truth) == 1.0
    # each centroid sits near one true centre
    for centre in ([0, 0], [10, 0], [0, 10]):
        assert np.min(np.linalg.norm(result.centroids - centre, axis=1)) < 0.5


def test_kmeans_is_seeded():
    points, _ = blobs()
    a, b = kmeans(points, 4, seed=7), kmeans(points, 4, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)


def test_one_cluster_is_the_mean():
    points = np.array([[0.0, 0.0], [2.0, 4.0]])
    result = kmeans(points, 1, seed=0)
    np.testing.assert_allclose(result.centroids, [[1.0, 2.0]])
    assert result.labels.tolist() == [0, 0]


def test_too_many_clusters_is_an_error():
    with pytest.raises(ValueError, match="3 clusters from 2 points"):
        kmeans(np.zeros((2, 2)), 3, seed=0)


def test_nearest_and_global_assignment():
    centroids = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    points = np.array([[0.4, -0.2], [4.0, 6.0], [-4.0, 4.0], [3.0, 3.0]])
    assert nearest(points, centroids).tolist() == [0, 1, 2, 1]
    assert global_assignment(points[:3], centroids).tolist() == [0, 1, 2]


def test_route_local_mode_restricts_to_allowed_clusters():
    centroids = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    points = np.array([[0.1, 0.1], [-4.0, 4.0]])
    # global mode: every cluster
    assert route(points, centroids).tolist() == [0, 2]
    # local mode, this client only matched clusters 1 and 2: the first point goes to 1 or 2
    routed = route(points, centroids, allowed=[2, 1])
    assert routed.tolist() == [1, 2]  # (0.1,0.1) is nearer to (5,5) than to (-5,5)


def test_purity_counts_majorities():
    labels = np.array([0, 0, 0, 1, 1, 1])
    truth = np.array(["a", "a", "b", "b", "b", "b"])
    assert cluster_purity(labels, truth) == pytest.approx(5 / 6)


def test_n_init_reaches_scikit_learn():
    from sklearn.cluster import KMeans

    # uniform points have no clear clusters, so one k-means++ run and ten can end apart
    points = np.random.default_rng(3).uniform(size=(60, 2))
    for n_init in ("auto", 1, 10):  # "auto" with k-means++ is one run (the reference's)
        ours = kmeans(points, 5, seed=0, n_init=n_init)
        theirs = KMeans(5, random_state=0, n_init=n_init).fit(points)
        np.testing.assert_array_equal(ours.labels, theirs.labels_)
    one, ten = kmeans(points, 5, seed=0, n_init="auto"), kmeans(points, 5, seed=0, n_init=10)
    assert not np.array_equal(one.labels, ten.labels)  # so the check above tells them apart


def test_allowed_clusters_are_all_or_the_matched_ones_once_each():
    np.testing.assert_array_equal(allowed_clusters([3, 1, 3], 4, everywhere=True), [0, 1, 2, 3])
    np.testing.assert_array_equal(allowed_clusters([3, 1, 3], 4, everywhere=False), [1, 3])


def test_nearest_two_distances_by_hand():
    centroids = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    points = np.array([[0.0, 0.0], [3.0, 0.0]])
    first, second = nearest_two(points, centroids, np.array([0, 1]))
    np.testing.assert_allclose(first, [0.0, 3.0])  # (3, 0) to (0, 0)
    np.testing.assert_allclose(second, [5.0, 4.0])  # (3, 0) to (3, 4)
    first, second = nearest_two(points, centroids, np.array([2]))
    np.testing.assert_allclose(first, [1.0, np.sqrt(10.0)])
    assert np.isnan(second).all()  # one allowed centroid: no second
