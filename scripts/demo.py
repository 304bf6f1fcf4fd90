"""Demo driver (run through ./scripts/demo): seeds a source registry, mirrors it, shows the result."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.images import make_layer, push_image, push_index  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

MIRROR = [sys.executable, "-m", "mirror"]
SYSTEM_POLICY = Path("/etc/containers/policy.json")
USER_POLICY = Path.home() / ".config" / "containers" / "policy.json"


def mirror(*args: str) -> str:
    print("$ mirror " + " ".join(args), flush=True)
    proc = subprocess.run([*MIRROR, *args], text=True, capture_output=True, cwd=ROOT)
    out = proc.stdout + proc.stderr
    print(out, end="" if out.endswith("\n") else "\n", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"mirror {args[0]} failed with exit status {proc.returncode}")
    return out


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mirror-demo-") as tmp:
        if not SYSTEM_POLICY.exists() and not USER_POLICY.exists():
            # copy and sync enforce policy.json as skopeo does; this machine has none (Debian's
            # containers-common ships one), so the demo brings an accept-anything policy of its own.
            policy = Path(tmp) / "policy.json"
            policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
            MIRROR.extend(["--policy", str(policy)])
            print(f"(no policy.json on this machine: using {policy}, which accepts every image)\n")
        with start_registry(Path(tmp) / "src") as src, start_registry(Path(tmp) / "dst") as dst:
            print(f"source registry      http://{src.host}\ndestination registry http://{dst.host}\n")
            base = make_layer(100, 64 * 1024)  # shared by the app images: copied once per repository
            push_image(src, "library/alpine", "3.19", seed=1)
            push_image(src, "apps/web", "1.0", fmt="docker", layers=[base, make_layer(2)],
                       labels={"org.opencontainers.image.title": "web"})
            push_image(src, "apps/web", "1.1", fmt="docker", layers=[base, make_layer(3)])
            push_image(src, "apps/api", "2.0", layers=[base, make_layer(4)])
            push_index(src, "tools/multi", "latest", seed=5)
            images = [("library/alpine", "3.19", []), ("apps/web", "1.0", []), ("apps/web", "1.1", []),
                      ("apps/api", "2.0", []), ("tools/multi", "latest", ["--all"])]
            for repo, tag, extra in images:
                mirror("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *extra,
                       f"docker://{src.host}/{repo}:{tag}", f"docker://{dst.host}/mirrored/{repo}:{tag}")
            sync_yaml = Path(tmp) / "sync.yaml"
            sync_yaml.write_text(
                f"{src.host}:\n"
                "  tls-verify: false\n"
                "  images:\n"
                "    apps/web: []          # every tag\n"
                "    library/alpine: ['3.19']\n"
                "  images-by-tag-regex:\n"
                "    apps/api: '^2\\.'\n"
            )
            print(f"==> sync.yaml (skopeo format)\n{sync_yaml.read_text()}")
            mirror("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", "--all",
                   str(sync_yaml), f"{dst.host}/synced")
            print("==> the same sync again: unchanged tags cost one HEAD on each side")
            mirror("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", "--all",
                   str(sync_yaml), f"{dst.host}/synced")
            print("==> what arrived at the destination\n")
            for repo in ("mirrored/library/alpine", "mirrored/tools/multi", "synced/web", "synced/api"):
                mirror("list-tags", "--tls-verify=false", f"docker://{dst.host}/{repo}")
            mirror("inspect", "--tls-verify=false", "--format",
                   "{{.Name}} {{.Digest}} {{.Architecture}} tags={{range .RepoTags}}{{.}} {{end}}",
                   f"docker://{dst.host}/mirrored/apps/web:1.0")
            mirror("inspect", "--tls-verify=false", "--raw", f"docker://{dst.host}/mirrored/tools/multi:latest")
            print("\ndemo finished: images copied and synced; registries stopped")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
