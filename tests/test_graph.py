from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from skcgcnn.graph import FewNeighborsWarning, GraphCollection, StructureError, build_graph

from ._shared import SAMPLE500, SAMPLE_REGRESSION, load_structures, needs_shared
from ._ties import (TIE_TOL, TieWarning, equivalent_sites, original_neighbors,
                    sorted_neighbours, tied_cut_atoms)


def rock_salt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])


def bcc_iron(a: float = 2.87) -> Structure:
    return Structure(Lattice.cubic(a), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def perovskite(a: float = 3.905) -> Structure:
    return Structure(Lattice.cubic(a), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def test_rock_salt_exact_shells():
    s = rock_salt()
    numbers, nbr_idx, nbr_dist = build_graph(s)
    assert numbers.tolist() == [11] * 4 + [17] * 4
    assert nbr_idx.shape == nbr_dist.shape == (8, 12)
    # 6 unlike ions at a/2, then 6 of the 12 like ions at a/sqrt(2)
    np.testing.assert_allclose(nbr_dist[:, :6], 2.82, atol=1e-6)
    np.testing.assert_allclose(nbr_dist[:, 6:], 5.64 / np.sqrt(2), atol=1e-6)
    species = numbers[nbr_idx]
    assert (species[:, :6] != numbers[:, None]).all()
    assert (species[:, 6:] == numbers[:, None]).all()


def test_bcc_exact_shells():
    numbers, nbr_idx, nbr_dist = build_graph(bcc_iron())
    np.testing.assert_allclose(nbr_dist[:, :8], 2.87 * np.sqrt(3) / 2, atol=1e-6)
    np.testing.assert_allclose(nbr_dist[:, 8:], 2.87, atol=1e-6)
    # first shell: the other atom of the cell (8 periodic images), second: its own images
    assert (nbr_idx[0, :8] == 1).all() and (nbr_idx[0, 8:] == 0).all()


def test_perovskite_exact_shells():
    a = 3.905
    numbers, nbr_idx, nbr_dist = build_graph(perovskite(a))
    sr, ti, o = 0, 1, 2
    np.testing.assert_allclose(nbr_dist[sr], a / np.sqrt(2), atol=1e-6)      # 12 O
    assert (numbers[nbr_idx[sr]] == 8).all()
    np.testing.assert_allclose(nbr_dist[ti, :6], a / 2, atol=1e-6)           # 6 O
    np.testing.assert_allclose(nbr_dist[ti, 6:], a * np.sqrt(3) / 2, atol=1e-6)  # 6 of 8 Sr
    assert (numbers[nbr_idx[ti, :6]] == 8).all() and (numbers[nbr_idx[ti, 6:]] == 38).all()
    np.testing.assert_allclose(nbr_dist[o, :2], a / 2, atol=1e-6)            # 2 Ti
    np.testing.assert_allclose(nbr_dist[o, 2:], a / np.sqrt(2), atol=1e-6)   # 4 Sr + 8 O tie
    assert (numbers[nbr_idx[o, :2]] == 22).all()


def check_same_neighbours(structure, nbr_idx, nbr_dist, ident="crystal",
                          radius=8.0, max_num_nbr=12) -> list[int]:
    """Neighbour lists (``nbr_idx``, ``nbr_dist``) against the original's
    (``get_all_neighbors`` + ``sorted``).

    Distances must agree to 1e-5 Å and indices exactly, except inside a shell of equal
    distances (``TIE_TOL``), whose members either program may list in another order: a
    shell kept whole must hold the same sites; a shell cut by ``max_num_nbr`` must keep
    symmetry-equivalent sites, or the atom must be one of ``tied_cut_atoms`` (where the
    choice follows rounding).  Returns the atoms whose kept neighbours differ for that
    reason."""
    full = sorted_neighbours(structure, radius)
    idx, dist = original_neighbors(structure, radius, max_num_nbr)
    np.testing.assert_allclose(nbr_dist, dist, rtol=0, atol=1e-5, err_msg=ident)
    classes, tied, by_rounding = None, None, []
    for atom in np.flatnonzero((nbr_idx != idx).any(axis=1)):
        row, start = full[atom], 0
        while start < max_num_nbr:
            end = start + 1
            while end < len(row) and row[end][1] - row[start][1] < TIE_TOL:
                end += 1
            kept = slice(start, min(end, max_num_nbr))
            ours, theirs = sorted(nbr_idx[atom, kept]), sorted(idx[atom, kept])
            if ours != theirs:
                where = f"{ident}: atom {atom}, neighbours {start}..{kept.stop - 1}"
                assert end > max_num_nbr, f"{where}: a whole shell holds other sites"
                if classes is None:
                    classes, tied = equivalent_sites(structure), tied_cut_atoms(structure)
                if sorted(classes[ours]) != sorted(classes[theirs]):
                    assert atom in tied, f"{where}: other sites kept, not from a tie"
                    by_rounding.append(int(atom))
            start = end
    return by_rounding


@needs_shared
@pytest.mark.parametrize("folder,limit", [(SAMPLE_REGRESSION, None), (SAMPLE500, 60)])
def test_same_neighbours_as_the_original(folder, limit):
    ids, structures, _ = load_structures(str(folder), limit)
    for ident, s in zip(ids, structures):
        _, nbr_idx, nbr_dist = build_graph(s)
        atoms = check_same_neighbours(s, nbr_idx, nbr_dist, ident)
        if atoms:
            warnings.warn(f"crystal {ident}: atoms {atoms} keep other neighbours than the "
                          "original from a shell of inequivalent sites at equal distance "
                          "cut by max_num_nbr (the choice follows rounding)", TieWarning)


def test_neighbour_check_allows_reordered_ties_only():
    s = perovskite()
    _, idx, dist = build_graph(s)
    assert check_same_neighbours(s, idx, dist) in ([], [2, 3, 4])
    # a shell listed in another order holds the same neighbours (Sr: 12 O at a/sqrt(2))
    reordered = idx.copy()
    reordered[0] = reordered[0][::-1]
    assert check_same_neighbours(s, reordered, dist) in ([], [2, 3, 4])
    # another site in a complete shell is wrong (Ti: 6 O at a/2, not Sr)
    wrong = idx.copy()
    wrong[1, 0] = 0
    with pytest.raises(AssertionError, match="atom 1, neighbours 0..5: a whole shell"):
        check_same_neighbours(s, wrong, dist)
    # a cut shell of equivalent sites may keep any of them (Ti: 6 of the 8 Sr images,
    # all site 0) ...
    assert tied_cut_atoms(s) == [2, 3, 4]
    # ... while at a cut shell of inequivalent sites (O: 10 of 4 Sr + 8 O) another
    # choice is accepted only because the atom is a tied one; a distance off is wrong
    off = dist.copy()
    off[2, 5] += 1e-3
    with pytest.raises(AssertionError, match="Mismatched"):
        check_same_neighbours(s, idx, off)


def neighbour_multiset(structure: Structure) -> list:
    numbers, nbr_idx, nbr_dist = build_graph(structure)
    return sorted((int(z), tuple(np.round(d, 4)), tuple(sorted(numbers[i].tolist())))
                  for z, i, d in zip(numbers, nbr_idx, nbr_dist))


@needs_shared
def test_graph_invariant_under_rotation_translation_permutation_supercell():
    _, structures, _ = load_structures(str(SAMPLE_REGRESSION))
    s = structures[0]
    reference = neighbour_multiset(s)
    # rotation: rotate the lattice, keep fractional coordinates
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                    [0, 0, 1]])
    rotated = Structure(Lattice(s.lattice.matrix @ rot.T), s.species, s.frac_coords)
    assert neighbour_multiset(rotated) == reference
    translated = s.copy()
    translated.translate_sites(list(range(len(s))), [0.31, -0.12, 0.77])
    assert neighbour_multiset(translated) == reference
    order = np.random.default_rng(0).permutation(len(s))
    permuted = Structure(s.lattice, [s.species[i] for i in order], s.frac_coords[order])
    assert neighbour_multiset(permuted) == reference
    supercell = s * (2, 2, 2)
    assert neighbour_multiset(supercell) == sorted(reference * 8)


def test_fewer_neighbours_are_masked_not_padded():
    with pytest.warns(FewNeighborsWarning, match="increase radius"):
        numbers, nbr_idx, nbr_dist = build_graph(rock_salt(), radius=3.0)
    assert (nbr_idx[:, :6] >= 0).all() and (nbr_idx[:, 6:] == -1).all()
    assert (nbr_dist[:, 6:] == 0).all()


def test_no_neighbour_is_an_error():
    with pytest.raises(StructureError, match="no neighbour within radius=2.0"):
        build_graph(rock_salt(), radius=2.0)


def test_bad_structures():
    from pymatgen.core import Molecule

    with pytest.raises(StructureError, match="Molecule"):
        build_graph(Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]]))
    disordered = Structure(Lattice.cubic(4), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    with pytest.raises(StructureError, match="partially occupied"):
        build_graph(disordered)
    with pytest.raises(StructureError, match="no sites"):
        build_graph(Structure(Lattice.cubic(4), [], []))
    with pytest.raises(StructureError, match="not a pymatgen Structure"):
        build_graph({"lattice": 1})


def test_gaussian_centers_match_the_original():
    from skcgcnn.model import GaussianExpansion  # the one place the formula lives

    centers = GaussianExpansion(0.0, 8.0, 0.2).centers.double().numpy()
    assert len(centers) == 41 and centers[0] == 0 and abs(centers[-1] - 8.0) < 1e-9


def make_collection() -> GraphCollection:
    from skcgcnn.atom_features import get_atom_features

    graphs = [build_graph(s) for s in (rock_salt(), bcc_iron(), perovskite())]
    return GraphCollection.from_graphs(graphs, ids=["nacl", "fe", "srtio3"],
                                       atom_features=get_atom_features("cgcnn"))


def test_collection_storage_is_compact():
    graphs = make_collection()
    assert len(graphs) == 3 and graphs.n_atoms.tolist() == [8, 2, 5]
    assert graphs.nbytes / graphs.n_atoms.sum() <= 100 + 8 * 4 / 15  # 98 B/atom + pointers


def test_collection_indexing():
    graphs = make_collection()
    sub = graphs[np.array([2, 0])]
    assert sub.ids.tolist() == ["srtio3", "nacl"]
    assert sub.n_atoms.tolist() == [5, 8]
    np.testing.assert_array_equal(sub.graph(1)[1], graphs.graph(0)[1])
    assert graphs[1:].ids.tolist() == ["fe", "srtio3"]
    assert graphs[np.array([False, True, False])].ids.tolist() == ["fe"]
    assert graphs[-1].ids.tolist() == ["srtio3"]
    assert len(graphs[np.array([], dtype=int)]) == 0
    with pytest.raises(IndexError):
        graphs[np.array([3])]
    with pytest.raises(IndexError):
        graphs[np.array([0.5])]


def test_collection_pickles():
    graphs = make_collection()
    again = pickle.loads(pickle.dumps(graphs))
    assert again.ids.tolist() == graphs.ids.tolist()
    np.testing.assert_array_equal(again.nbr_idx, graphs.nbr_idx)
    assert again.atom_features.n_features == 92


def test_collate_offsets_neighbours_per_crystal():
    graphs = make_collection()
    batch = graphs.collate(np.array([1, 2]))
    assert batch["atom_fea"].shape == (7, 92)
    assert batch["crystal_idx"].tolist() == [0, 0, 1, 1, 1, 1, 1]
    # fe's neighbours stay in 0..1, srtio3's move to 2..6
    assert set(np.unique(batch["nbr_idx"][:2])) <= {0, 1}
    assert set(np.unique(batch["nbr_idx"][2:])) <= set(range(2, 7))
    np.testing.assert_array_equal(batch["atom_fea"][0],
                                  graphs.atom_features.table[26])


def test_collate_keeps_masked_slots():
    from skcgcnn.atom_features import get_atom_features

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewNeighborsWarning)
        g = build_graph(rock_salt(), radius=3.0)
    graphs = GraphCollection.from_graphs([build_graph(bcc_iron()), g],
                                         atom_features=get_atom_features("cgcnn"), radius=3.0)
    batch = graphs.collate()
    assert (batch["nbr_idx"][2:, 6:] == -1).all()
    assert (batch["nbr_idx"][2:, :6] >= 2).all()


def test_with_atom_features():
    graphs = make_collection()
    onehot = graphs.with_atom_features("onehot")
    assert onehot.atom_features.n_features == 100
    assert onehot.nbr_idx is graphs.nbr_idx  # no new neighbour search
    with pytest.raises(ValueError, match="has no entry for atomic number"):
        graphs.with_atom_features({"Na": [1.0]})


def test_scikit_learn_indexing():
    from sklearn.utils import _safe_indexing
    from sklearn.model_selection import train_test_split

    graphs = make_collection()
    assert graphs.shape == (3,)
    assert _safe_indexing(graphs, np.array([2, 1])).ids.tolist() == ["srtio3", "fe"]
    train, test = train_test_split(graphs, test_size=1, random_state=0)
    assert isinstance(train, GraphCollection) and len(train) == 2 and len(test) == 1


def test_selection_breaks_ties_in_search_order():
    from skcgcnn.graph._neighbors import _nearest

    rng = np.random.default_rng(1)
    n, k = 30, 12
    counts = rng.integers(0, 40, size=n)
    center = np.repeat(np.arange(n), counts)
    point = rng.integers(0, n, size=center.size)
    dist = rng.integers(1, 6, size=center.size) / 2.0  # many exact ties
    dist[rng.random(center.size) < 0.05] = np.inf     # self pairs are marked inf
    idx, d = _nearest(center, point, dist, n, k)
    finite = np.isfinite(dist)
    c, p, dd = center[finite], point[finite], dist[finite]
    order = np.lexsort((dd, c))  # stable: ties keep their search order
    for atom in range(n):
        mine = order[c[order] == atom][:k]
        found = int((idx[atom] >= 0).sum())
        assert found == len(mine)
        np.testing.assert_array_equal(idx[atom, :found], p[mine])
        np.testing.assert_array_equal(d[atom, :found], dd[mine].astype(np.float32))
        assert (idx[atom, found:] == -1).all() and (d[atom, found:] == 0).all()
