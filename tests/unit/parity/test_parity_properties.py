"""Property tests: the diff is empty on equal documents, finds any single mutation at the
mutated path, and ignore rules remove exactly the ignored paths."""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity.compare import diff_json
from parity.model import DiffKind
from parity.paths import render_path
from parity.rules import CompiledRules, EndpointRules

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_docs = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=25,
)
containers = st.dictionaries(st.text(max_size=6), json_docs, min_size=1, max_size=5)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def all_paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from all_paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from all_paths(v, (*prefix, i))


def get(doc, segs):
    for s in segs:
        doc = doc[s]
    return doc


def set_at(doc, segs, value):
    get(doc, segs[:-1])[segs[-1]] = value


@SETTINGS
@given(json_docs)
def test_a_document_never_differs_from_a_copy_of_itself(doc):
    assert diff_json(doc, json.loads(json.dumps(doc))) == []


@SETTINGS
@given(containers, st.data())
def test_any_single_value_mutation_is_reported_once_at_the_mutated_path(doc, data):
    segs = data.draw(st.sampled_from([p for p in all_paths(doc) if p]))
    mutated = copy.deepcopy(doc)
    old = get(doc, segs)
    new = "\u2063mutated" if old != "\u2063mutated" else 12345
    set_at(mutated, segs, new)
    diffs = diff_json(doc, mutated)
    assert [(d.path, d.control, d.candidate) for d in diffs] == [(render_path(segs), old, new)]
    expected = DiffKind.VALUE if isinstance(old, str) else DiffKind.TYPE
    assert diffs[0].kind is expected


@SETTINGS
@given(containers, st.data())
def test_a_removed_key_is_missing_and_an_added_key_is_extra(doc, data):
    dict_paths = [p for p in all_paths(doc) if isinstance(get(doc, p), dict) and get(doc, p)]
    segs = data.draw(st.sampled_from(dict_paths))
    key = data.draw(st.sampled_from(sorted(get(doc, segs))))
    smaller = copy.deepcopy(doc)
    del get(smaller, segs)[key]
    assert [(d.kind, d.path) for d in diff_json(doc, smaller)] == [
        (DiffKind.MISSING, render_path((*segs, key)))
    ]
    assert [(d.kind, d.path) for d in diff_json(smaller, doc)] == [
        (DiffKind.EXTRA, render_path((*segs, key)))
    ]


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + ".") or path.startswith(root + "[")


@SETTINGS
@given(containers, st.data())
def test_ignore_rules_remove_exactly_the_ignored_paths(doc, data):
    candidates = [p for p in all_paths(doc) if p]
    picked = data.draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=4, unique=True))
    # mutate leaves-first so that earlier mutations do not remove later paths
    picked.sort(key=len, reverse=True)
    mutated = copy.deepcopy(doc)
    for n, segs in enumerate(picked):
        try:
            set_at(mutated, segs, f"\u2063m{n}")
        except (KeyError, IndexError, TypeError):
            continue
    ignored = render_path(data.draw(st.sampled_from(picked)))
    plain = diff_json(doc, mutated)
    ruled = diff_json(doc, mutated, CompiledRules(EndpointRules(ignore=[ignored])))
    assert ruled == [d for d in plain if not under(d.path, ignored)]


def test_a_key_ending_in_a_newline_is_quoted_so_an_ignore_rule_for_it_holds():
    path = render_path(("A\n",))
    assert path == "$['A\n']"
    ruled = diff_json({"A\n": None}, {"A\n": "x"}, CompiledRules(EndpointRules(ignore=[path])))
    assert ruled == []
