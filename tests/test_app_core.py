"""The app's Qt-free core: which jobs may run side by side."""

import pytest

from app.core.jobs import EXPORT, PORTRAIT, SCENE, JobLanes, RunningJob, refusal


def test_jobs_holding_different_lanes_run_together_and_a_shared_lane_refuses():
    lanes = JobLanes()
    training = RunningJob("train", "Training demo", frozenset({SCENE}), object())
    lanes.add(training)
    export = RunningJob("export", "Export video", frozenset({EXPORT}), object())
    assert lanes.blocker(export.lanes) is None  # a training and an export of the project
    lanes.add(export)
    video = RunningJob("portrait-video", "Orbit video", frozenset({PORTRAIT}), object())
    assert lanes.blocker(video.lanes) is None  # a portrait job beside a scene training
    lanes.add(video)
    edit = frozenset({SCENE})
    assert lanes.blocker(edit) is training and lanes.holding(SCENE) is training
    assert lanes.blocker(frozenset({SCENE, EXPORT})) is training  # opening a project waits for both
    assert "the train job (Training demo) runs" in refusal("edit", training)
    with pytest.raises(RuntimeError, match="held by train"):
        lanes.add(RunningJob("edit", "Editing", edit, object()))
    assert lanes.remove(training.runner) is training and lanes.blocker(edit) is None
    assert lanes.kinds() == ["export", "portrait-video"] and len(lanes) == 2
    assert lanes.remove(object()) is None
