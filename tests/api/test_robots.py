"""Robots: a lab declares platform, cameras and action spaces."""

from tests.api.actors import ROBOT


def test_lab_registers_and_lists_robots(lab1, lab2):
    assert lab1.post("/api/v1/robots/", ROBOT).status_code == 201
    assert [r["name"] for r in lab1.get("/api/v1/robots/").json()] == ["franka-1"]
    assert lab2.get("/api/v1/robots/").json() == []


def test_duplicate_name_conflicts(lab1):
    lab1.post("/api/v1/robots/", ROBOT)
    response = lab1.post("/api/v1/robots/", ROBOT)
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "robot_exists",
        "message": response.json()["error"]["message"],
        "field": "name",
    }


def test_unknown_action_space_names_the_field(lab1):
    response = lab1.post("/api/v1/robots/", {**ROBOT, "action_spaces": ["telepathy"]})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "action_spaces"


def test_owners_cannot_register_robots(owner):
    response = owner.post("/api/v1/robots/", ROBOT)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
