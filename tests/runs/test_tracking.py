"""W&B runs of training and evaluation jobs share their tags."""

from maml_cli.runs.tracking import task_tag


def test_the_task_tag_names_ways_and_shots_or_shots_alone():
    assert task_tag(5, 1) == "5w1s"
    assert task_tag(None, 10) == "10shot"  # regression: no ways
