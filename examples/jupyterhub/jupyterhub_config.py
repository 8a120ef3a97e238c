"""JupyterHub for a team that shares one trainorch service and one GPU cluster.

    jupyterhub -f jupyterhub_config.py

One ``trainorch serve --hub`` runs as a hub-managed service: it owns the job store
(PostgreSQL) and the queue, and places jobs on a shared Dask cluster (``dask scheduler`` +
``dask cuda worker`` per GPU node, see docs/deployment.md). Every single-user server is told
where it is (``TRAINORCH_SERVICE_URL``); its trainorch extension then starts no orchestrator
of its own and forwards the panel's REST calls and websocket, and ``%%train`` from its
kernels, to the service with the server's own hub token, so the service knows which user
is calling. Jobs belong to the service, not to a user's server: they keep running when a
server is stopped or culled, and their owner sees them when she comes back.

Change the values in the first block for your site (the store and the scheduler may also
come from the hub's environment). The authenticator and the spawner are the site's own
choice (JupyterHub's defaults: PAM and local processes); nothing here depends on them.
"""

import os

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

# -- site settings ----------------------------------------------------------------------
# The job store. Give the password in ~/.pgpass of the user the hub runs as, or here in
# the URL (postgresql+psycopg://trainorch:PASSWORD@...). Tables are created on first start.
TRAINORCH_DB = os.environ.get(
    "TRAINORCH_DB", "postgresql+psycopg://trainorch@db.example.internal:5432/trainorch"
)
# The shared Dask scheduler that GPU nodes' workers join.
TRAINORCH_CLUSTER = os.environ.get("TRAINORCH_CLUSTER", "tcp://scheduler.example.internal:8786")
# Where the service listens. Single-user servers connect to this address, so it must be
# reachable from wherever they run (use the hub host's name for container spawners).
TRAINORCH_SERVICE_ADDRESS = "http://127.0.0.1:10101"
# The service's own folder: checkpoints go to <data dir>/checkpoints/<job id> on the worker
# that runs an attempt, so mount it at the same path on every GPU node (NFS) if jobs resume
# from checkpoints after a retry on another node.
TRAINORCH_DATA_DIR = "/srv/trainorch"
# trainorch admins (may read, cancel, retry and reprioritise every job, and stop the
# service): these users, members of these hub groups, and every hub admin.
TRAINORCH_ADMIN_USERS = ["ada"]
TRAINORCH_ADMIN_GROUPS = ["ml-admins"]

# -- the trainorch service -----------------------------------------------------------------
c.JupyterHub.services = [
    {
        "name": "trainorch",
        # The hub routes <hub>/services/trainorch/ to this address and tells the service to
        # listen there (JUPYTERHUB_SERVICE_URL, JUPYTERHUB_SERVICE_PREFIX).
        "url": TRAINORCH_SERVICE_ADDRESS,
        # Managed: the hub starts it, and restarts it if it exits. A restarted service adopts
        # the attempts still running on the workers; it never runs them again.
        "command": [
            "trainorch",
            "serve",
            "--hub",
            *(f"--TrainOrch.admin_users={name}" for name in TRAINORCH_ADMIN_USERS),
            *(f"--TrainOrch.admin_groups={name}" for name in TRAINORCH_ADMIN_GROUPS),
        ],
        "environment": {
            "TRAINORCH_DB": TRAINORCH_DB,
            "TRAINORCH_CLUSTER": TRAINORCH_CLUSTER,
            "TRAINORCH_DATA_DIR": TRAINORCH_DATA_DIR,
            # Quotas: per user, and per hub group on all its members' jobs together.
            # "TRAINORCH_GPU_QUOTA": "8",
            # "TRAINORCH_GROUP_QUOTAS": '{"vision": {"gpus": 32, "queued": 2000}}',
            # Checkpoints on storage every GPU node mounts at the same path.
            # "TRAINORCH_CHECKPOINT_ROOT": "/shared/trainorch-checkpoints",
            # Tracking: a shared MLflow server (or "off"); by default SQLite in the data dir.
            # "TRAINORCH_MLFLOW": "http://mlflow.example.internal:5000",
            # "TRAINORCH_MLFLOW_UI_URL": "https://mlflow.example.internal",
        },
        # Browsers never talk to the service directly (they go through their own server),
        # so no OAuth confirmation page is ever wanted.
        "oauth_no_confirm": True,
    },
    # Idle culling (pip install jupyterhub-idle-culler). Culling stops a user's server and
    # its kernels, never her jobs: they run in the service's cluster and she finds them in
    # the panel, `%jobs` and `trainorch list` when she starts her server again. Kernel
    # variables are gone with the kernel, so `%%train --out` values of a job that ends while
    # the server is away are fetched later with jupyter_trainorch.client.get_job(ID).result().
    # {
    #     "name": "idle-culler",
    #     "command": ["python3", "-m", "jupyterhub_idle_culler", "--timeout=3600"],
    # },
]

# -- who may call the service ---------------------------------------------------------------
c.JupyterHub.load_roles = [
    {
        # Every user may use the service (the default "user" role, plus the service's
        # access scope, which the service checks on every request).
        "name": "user",
        "scopes": ["self", "access:services!service=trainorch"],
    },
    # With idle culling:
    # {
    #     "name": "idle-culler",
    #     "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    #     "services": ["idle-culler"],
    # },
]
# Members of this group are trainorch admins (TRAINORCH_ADMIN_GROUPS above).
c.JupyterHub.load_groups = {"ml-admins": {"users": []}}

# -- single-user servers ---------------------------------------------------------------------
# The server's own token (JUPYTERHUB_API_TOKEN) is what it forwards to the service: besides
# the default server scopes it needs the service's access scope. A token only gets the
# scopes its user holds, so the "user" role above must grant it too.
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    "access:services!service=trainorch",
]
c.Spawner.environment = {
    # The shared service, with its prefix. With this set, a server never starts an
    # orchestrator or a cluster of its own.
    "TRAINORCH_SERVICE_URL": TRAINORCH_SERVICE_ADDRESS + "/services/trainorch/",
}
