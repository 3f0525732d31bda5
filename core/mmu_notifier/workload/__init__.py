"""The main job: workloads over every installed driver, checked against every rule."""
