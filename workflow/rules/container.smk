# Stage container: where study jobs run, from the study's `runtime` key.
# Include before the stage rules (the apptainer `container:` below applies to
# rules defined after it). Logic lives in layerbench.runtime.containers.
#
#   runtime: none       LB_JOB is the host's Python; IMAGE is empty.
#   runtime: docker     rule container_image builds layerbench:<tag> once (tag = hash
#                       of containers/Dockerfile, the locks, flavour and base) and
#                       records it in results/containers/<tag>.json; every job
#                       waits for that file and runs through `docker run`.
#   runtime: apptainer  rule container_sif also converts the image to
#                       results/containers/<tag>.sif (needs docker and apptainer
#                       on one machine, or a .sif copied there); jobs run in it
#                       through Snakemake's own --sdm apptainer
#                       (--profile workflow/profiles/apptainer). UNVERIFIED: only
#                       dry runs were possible (no apptainer where this was built).
#
# Build settings (environment variables; the study schema has only `runtime`):
# LAYERBENCH_TORCH_FLAVOUR=cuda|cpu, LAYERBENCH_BASE_IMAGE, LAYERBENCH_WHEELS,
# LAYERBENCH_CONTAINER_ENGINE. See containers/README.md.
from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from layerbench.runtime import containers as lb_containers

CONTAINER = lb_containers.plan(STUDY.runtime, P.root, repo=workflow.basedir)
LB_JOB = CONTAINER.job_command()  # stage rules: "{LB_JOB} stage data --study ..."
LB_TRAIN = CONTAINER.job_command(module=R.train_launcher())  # rule train: LB_JOB, or its multi-process launcher
IMAGE = CONTAINER.inputs  # stage rules: input: image=IMAGE

USING_APPTAINER = DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
if CONTAINER.runtime == "apptainer" and not USING_APPTAINER:
    raise WorkflowError(
        "this study has runtime: apptainer; run it with Snakemake's apptainer "
        "support: --profile workflow/profiles/apptainer (or --sdm apptainer --apptainer-args --nv)"
    )
if USING_APPTAINER and CONTAINER.runtime != "apptainer":
    raise WorkflowError(
        f"--sdm apptainer needs the study key runtime: apptainer (this study has runtime: {CONTAINER.runtime})"
    )


if CONTAINER.runtime != "none":

    localrules:
        container_image,

    rule container_image:
        """Build the study image unless layerbench:<tag> exists; record its id and labels."""
        input:
            dockerfile=CONTAINER.dockerfile,
            lock=CONTAINER.lock,
            container_locks=lb_containers.container_locks(CONTAINER.dockerfile),
        output:
            CONTAINER.image_json,
        params:
            build=CONTAINER.build_command(),
        log:
            CONTAINER.out_dir / f"{CONTAINER.tag}.log",
        container:
            None
        shell:
            "{params.build} --out {output} > {log} 2>&1"


if CONTAINER.runtime == "apptainer":

    localrules:
        container_sif,

    rule container_sif:
        """The study image as a .sif for --sdm apptainer (UNVERIFIED: no apptainer here)."""
        input:
            CONTAINER.image_json,
        output:
            CONTAINER.sif,
        params:
            image=CONTAINER.image,
        log:
            CONTAINER.out_dir / f"{CONTAINER.tag}.sif.log",
        container:
            None
        shell:
            "apptainer build --force {output} docker-daemon://{params.image} > {log} 2>&1"


container: CONTAINER.apptainer_image
