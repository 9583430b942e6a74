# VM sessions on a Docker engine now belong to the "docker-vm" runner (runners/docker_vm.py), no
# longer to a branch of the Docker runner: live ones started before move with it, so their
# stop, consoles and reconciliation reach the runner that knows them.

from django.db import migrations


def to_docker_vm(apps, schema_editor):
    Session = apps.get_model("sessions_app", "Session")
    Session.objects.filter(runner_name="docker", runner_state__kind="vm").update(runner_name="docker-vm")


def back_to_docker(apps, schema_editor):
    Session = apps.get_model("sessions_app", "Session")
    Session.objects.filter(runner_name="docker-vm").update(runner_name="docker")


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0004_models_move_to_their_apps"),
    ]

    operations = [
        migrations.RunPython(to_docker_vm, back_to_docker),
    ]
