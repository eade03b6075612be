"""Entry point of the valid-action child process (``python -m zoo.jericho.priorzero.envs.valid_actions_worker``).

A separate module so that the frames' dataclasses unpickle as ``valid_actions.*`` rather than ``__main__.*``.
"""
from zoo.jericho.priorzero.envs.valid_actions import worker_main

if __name__ == "__main__":
    worker_main()
