"""tools/handout.py: markers, stubs, the exclusion list, and the handout zip of a toy repository."""

import json
import stat
import zipfile

import pytest

import toy_assignment
from toy_assignment import BEGIN, END

handout = toy_assignment.load_builder()


def scan(body: str):
    return handout.scan_file("dlmie/m.py", body)


def errors(body: str) -> list[str]:
    regions, problems = scan(body)
    assert regions == []
    return problems


def test_stub_keeps_indentation_and_hints():
    text = f'def f(x):\n    """Doc."""\n    # Hint: add.\n    {BEGIN}\n    y = x + 1\n    {END}\n    return y\n'
    regions, problems = scan(text)
    assert problems == []
    [region] = regions
    assert (region.part, region.where, region.begin, region.end, region.summary) == ("f", "dlmie.m.f", 4, 6, "Doc.")
    assert handout.stub(text, regions) == (
        'def f(x):\n    """Doc."""\n    # Hint: add.\n'
        '    raise NotImplementedError("f: implement this part (see the docstring of dlmie.m.f)")\n    return y\n'
    )


def test_method_and_nested_regions_are_named_by_their_function():
    text = (f'class A:\n    def g(self):\n        """Doc g."""\n        {BEGIN}\n        return 1\n        {END}\n\n\n'
            f'def outer():\n    """Doc outer."""\n    def inner():\n        """Doc inner."""\n'
            f'        {BEGIN}\n        return 2\n        {END}\n    return inner\n')
    regions, problems = scan(text)
    assert problems == []
    assert [(r.part, r.where) for r in regions] == [("g", "dlmie.m.A.g"), ("inner", "dlmie.m.outer.inner")]
    stubbed = handout.stub(text, regions)
    assert BEGIN not in stubbed and "return 1" not in stubbed and "return 2" not in stubbed
    compile(stubbed, "m.py", "exec")


@pytest.mark.parametrize(
    "body, expected",
    [
        (f'def f():\n    """D."""\n    {BEGIN}\n    {BEGIN}\n    x = 1\n    {END}\n    {END}\n', "dlmie/m.py:4: nested BEGIN"),
        (f'def f():\n    """D."""\n    {BEGIN}\n    x = 1\n', "dlmie/m.py:3: BEGIN without an END"),
        (f'def f():\n    """D."""\n    x = 1\n    {END}\n', "dlmie/m.py:4: END without a BEGIN"),
        (f'{BEGIN}\nx = 1\n{END}\n', "dlmie/m.py:1: region outside a function"),
        (f'class A:\n    {BEGIN}\n    x = 1\n    {END}\n', "dlmie/m.py:2: region outside a function"),
        (f'def f():\n    """D."""\n    {BEGIN}\n    x = 1\n    {END}\n    {BEGIN}\n    y = 2\n    {END}\n',
         "dlmie/m.py:6: second region in f (the first is at line 3)"),
        (f'def f():\n    """D."""\n    x = 1  {BEGIN}\n', "dlmie/m.py:3: a marker must stand alone on its line"),
        (f'def f():\n    """D."""\n    {BEGIN}\n    x = 1\n  {END}\n', "dlmie/m.py:5: END is not indented like its BEGIN"),
        (f'def f():\n    """D."""\n    {BEGIN}\n    # only a comment\n    {END}\n', "dlmie/m.py:3: empty region in f"),
        (f'def f():\n    {BEGIN}\n    x = 1\n    {END}\n', "dlmie/m.py:2: f has no docstring"),
        (f'def f():\n    """D."""\n    {BEGIN}\n    x = 1\n\nx = 2\n    {END}\n', "dlmie/m.py:6: the region runs past the end of f"),
        (f'def f():\n    """D."""\n    if x:\n    {BEGIN}\n        y = 1\n    {END}\n', "dlmie/m.py:4: does not parse"),
    ],
)
def test_bad_markers_are_refused_with_file_and_line(body, expected):
    assert any(p.startswith(expected) for p in errors(body)), errors(body)


def test_duplicate_part_names_are_refused(tmp_path):
    region = f'def f():\n    """D."""\n    {BEGIN}\n    return 1\n    {END}\n'
    for name in ("a.py", "b.py"):
        (tmp_path / "dlmie").mkdir(exist_ok=True)
        (tmp_path / "dlmie" / name).write_text(region)
    with pytest.raises(handout.MarkerError, match=r"dlmie/b.py:3: part name f is also used at dlmie/a.py:3"):
        handout.find_regions(tmp_path, ["dlmie/a.py", "dlmie/b.py"])


@pytest.mark.parametrize(
    "path, ships",
    [
        (".ci/run", False),
        ("tools/handout.py", False),
        ("tests/test_layers.py", False),
        ("tests/reference.py", False),
        ("tests/conftest.py", True),
        ("tests/graded/conftest.py", True),
        ("tests/graded/test_rnn.py", True),
        ("tests/graded/fixtures/lstm_step_forward.npz", True),
        ("tests/graded/make_fixtures.py", False),
        ("dlmie/benchmarks/references.py", False),
        ("dlmie/bench.py", False),
        ("dlmie/rnn.py", True),
        ("dlmie/kernels/batchnorm_c.py", False),
        ("dlmie/kernels/batchnorm.py", True),
        ("dlmie/models/weights/show_and_tell.npz", True),
        ("docs/teaching.md", False),
        ("docs/figures/01_saliency.png", True),
        ("runs/tiny_convnet/last.npz", False),
        ("README.md", False),
        ("Makefile", True),
    ],
)
def test_exclusion_list(path, ships):
    assert (handout.excluded(path) == "") == ships


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The toy repository and its handout zip: (root, zip path, manifest, member name -> bytes)."""
    root = toy_assignment.make_tree(tmp_path_factory.mktemp("toy") / "solution")
    out = tmp_path_factory.mktemp("out") / "dlmie-student.zip"
    manifest, notes = handout.build(root, out)
    with zipfile.ZipFile(out) as zf:
        members = {info.filename: (zf.read(info), info.external_attr >> 16) for info in zf.infolist()}
    return root, out, manifest, members


def test_handout_members(built):
    _, out, _, members = built
    assert sorted(members) == [
        f"dlmie-student/{rel}"
        for rel in [
            "README.md", "assignment.json", "dlmie/__init__.py", "dlmie/assignment.py", "dlmie/counter.py",
            "dlmie/data/__init__.py", "dlmie/grade.py", "dlmie/grading.py", "dlmie/questions.py", "dlmie/toy.py", "get_data.sh",
            "notebooks/01_toy.ipynb", "notebooks/02_more.ipynb", "tests/conftest.py", "tests/graded/conftest.py",
            "tests/graded/fixtures/double.npz", "tests/graded/test_add_one.py", "tests/graded/test_double.py",
        ]
    ]
    assert members["dlmie-student/get_data.sh"][1] & stat.S_IXUSR
    assert not out.with_name(out.name + ".part").exists()


def test_manifest(built):
    _, _, manifest, members = built
    expected = {
        "parts": [
            {"name": "double", "file": "dlmie/toy.py", "function": "dlmie.toy.double", "notebook": "01_toy", "points": 2},
            {"name": "add_one", "file": "dlmie/counter.py", "function": "dlmie.counter.Counter.add_one",
             "notebook": "02_more", "points": 3},
        ],
        "files": ["dlmie/counter.py", "dlmie/toy.py"],
        "total": 5,
        "questions": [],
        "manual_total": 0,
    }
    assert manifest == expected
    assert json.loads(members["dlmie-student/assignment.json"][0]) == expected


def test_stubbed_files_and_cleared_notebooks(built):
    _, _, _, members = built
    toy = members["dlmie-student/dlmie/toy.py"][0].decode()
    assert "    # Hint: one multiplication.\n" \
           '    raise NotImplementedError("double: implement this part (see the docstring of dlmie.toy.double)")\n' in toy
    assert "out = x * 2" not in toy
    assert "x = float(x)" in toy  # written outside the region too (in half), so public anyway
    nb = json.loads(members["dlmie-student/notebooks/01_toy.ipynb"][0])
    assert nb["cells"][0]["outputs"] == [] and nb["cells"][0]["execution_count"] is None
    assert nb["cells"][0]["metadata"] == {}


def test_student_readme_lists_the_parts(built):
    _, _, _, members = built
    readme = members["dlmie-student/README.md"][0].decode()
    assert "- `double` in `dlmie/toy.py` (2 points): Twice x." in readme
    assert "- `add_one` in `dlmie/counter.py` (3 points): x plus one." in readme
    assert readme.index("notebooks/01_toy.ipynb") < readme.index("notebooks/02_more.ipynb")
    assert "python -m dlmie.grade --part NAME" in readme and "make submit" in readme
    assert "$" not in readme


def test_no_marker_or_solution_text_in_the_zip(built):
    _, _, _, members = built
    text = b"\n".join(data for data, _ in members.values()).decode("utf-8", errors="replace")
    for survivor in ("SOLUTION", "out = x * 2", "y = x + 1", "return y"):
        assert survivor not in text


def test_check_handout_finds_surviving_solution_lines(built):
    root, _, _, _ = built
    regions = handout.find_regions(root, ["dlmie/toy.py"])
    solution = {"dlmie/toy.py": (root / "dlmie/toy.py").read_text()}
    problems = handout.check_handout({"dlmie/toy.py": solution["dlmie/toy.py"].encode()}, regions, solution)
    assert problems == [
        f"dlmie/toy.py: marker text {BEGIN!r} survived",
        f"dlmie/toy.py: marker text {END!r} survived",
        "dlmie/toy.py:21: solution line of double survived: out = x * 2",
    ]


def test_echoes_note_solution_lines_in_other_files(built):
    root, _, _, _ = built
    regions = handout.find_regions(root, ["dlmie/toy.py"])
    contents = {"dlmie/kernel.py": b"    out = x * 2\n", "dlmie/toy.py": b""}
    assert handout.echoes(contents, regions, min_length=5) == [
        "dlmie/toy.py:21 (double) also appears in dlmie/kernel.py: out = x * 2"
    ]


def test_parts_and_tests_must_match(tmp_path):
    root = toy_assignment.make_tree(tmp_path / "solution")
    (root / "tests/graded/test_add_one.py").unlink()
    out = tmp_path / "h.zip"
    with pytest.raises(ValueError, match=r"dlmie/counter.py:\d+: part add_one has no graded test"):
        handout.build(root, out)
    assert not out.exists() and not out.with_name("h.zip.part").exists()


def test_no_regions_is_an_error(tmp_path):
    root = toy_assignment.make_tree(tmp_path / "solution")
    for rel in ("dlmie/toy.py", "dlmie/counter.py"):
        (root / rel).write_text('def f():\n    """D."""\n')
    with pytest.raises(ValueError, match="no student regions"):
        handout.build(root, tmp_path / "h.zip")
