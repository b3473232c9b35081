"""The graded tests: every test carries @pytest.mark.graded(part=<function name>, points=<int>)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "graded(part, points): a graded test of the assignment part `part` (a function's name), worth `points`"
    )
