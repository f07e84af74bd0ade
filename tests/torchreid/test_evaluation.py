"""The chance level printed beside the results (against torchreid's evaluate_rank of random rankings), and the gallery
checks."""
import numpy as np
import pytest

torchreid = pytest.importorskip('torchreid')

from dcal_plugin.torchreid import chance_level  # noqa: E402
from dcal_plugin.torchreid.evaluation import check_evaluable, max_valid_rank  # noqa: E402


def items(pids, camids):
    return [(f'{i}.jpg', pid, camid, 0) for i, (pid, camid) in enumerate(zip(pids, camids))]


def test_chance_level_is_the_mean_of_random_rankings():
    rng = np.random.default_rng(0)
    q_pids, q_camids = np.arange(6), np.array([0, 1, 2, 0, 1, 2])
    g_pids, g_camids = rng.integers(0, 9, 64), rng.integers(0, 3, 64)  # queries lose 0 to several same-view items
    query, gallery = items(q_pids, q_camids), items(g_pids, g_camids)
    chance = chance_level(query, gallery)
    assert len(chance.cmc) == max_valid_rank(query, gallery) == 50
    draws = [torchreid.metrics.evaluate_rank(rng.random((6, 64)), q_pids, g_pids, q_camids, g_camids)
             for _ in range(3000)]
    assert chance.mAP == pytest.approx(np.mean([m for _, m in draws]), abs=0.005)
    np.testing.assert_allclose(chance.cmc, np.mean([c for c, _ in draws], axis=0), atol=0.015)


def test_chance_level_of_a_single_match_is_its_mean_reciprocal_rank():
    query, gallery = items([0], [0]), items([0, 1, 2, 3], [1, 0, 0, 0])
    chance = chance_level(query, gallery)
    assert chance.mAP == pytest.approx(np.mean(1 / np.arange(1, 5)))
    np.testing.assert_allclose(chance.cmc, [0.25, 0.5, 0.75, 1.0])


def test_galleries_torchreid_cannot_score_fail_before_training():
    query = items([0, 1], [0, 0])
    check_evaluable({'ok': {'query': query, 'gallery': items([0, 0, 1, 1, 2], [0, 1, 0, 1, 1])}}, [1, 4])
    with pytest.raises(ValueError, match=r'ok\'s gallery gives CMC up to Rank-4'):
        check_evaluable({'ok': {'query': query, 'gallery': items([0, 0, 1, 1, 2], [0, 1, 0, 1, 1])}}, [1, 5])
    ragged = items([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 0])  # query 0 loses one same-view image, query 1 none
    with pytest.raises(ValueError, match=r'ragged: .* fewer than 50 .*ranked lists of \[5, 6\] items'):
        check_evaluable({'ragged': {'query': query, 'gallery': ragged}}, [1])
    # what torchreid would do after training: its Python ranking raises (its compiled Cython ranking, built by a
    # source install of 1.4.0, returns a CMC that falls instead)
    with pytest.raises(ValueError, match='inhomogeneous'):
        torchreid.metrics.evaluate_rank(np.random.rand(2, 6), np.array([0, 1]), np.array([item[1] for item in ragged]),
                                        np.array([0, 0]), np.array([item[2] for item in ragged]), use_cython=False)
    with pytest.raises(ValueError, match='no query has a gallery image of its identity from another camera'):
        check_evaluable({'same': {'query': query, 'gallery': items([0, 1, 2], [0, 0, 1])}}, [1])
