"""The baseline of the upload benchmark: what a user writes with the official Datature SDK.

Uploads every *.jpg of a folder with `create_upload_session()` + `add_bytes(...)` and the
same custom metadata edgecap sends (with each file up to SDK 1.10; through the bulk
custom-metadata endpoint after the upload with 1.12, which no longer takes it per file), to the server at DATATURE_API_BASE_URL, and waits for
the operation like the SDK does by default.

usage: python sdk_upload.py FOLDER SECRET PROJECT_ID
"""

import inspect
import os
import sys

from datature.nexus import Client

META = {"site": "bench", "camera": "cam0", "device": "bench01"}


def main() -> int:
    folder, secret, project_id = sys.argv[1:4]
    project = Client(secret).get_project(project_id)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))
    # 1.6 to 1.10 take the metadata with each file; 1.12 has dropped that argument and
    # sets metadata through the bulk endpoint once the files are uploaded.
    in_session = "custom_metadata" in inspect.signature(
        project.assets.create_upload_session().add_bytes).parameters
    with project.assets.create_upload_session() as session:
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                data = f.read()
            if in_session:
                session.add_bytes(data, name, custom_metadata=META)
            else:
                session.add_bytes(data, name)
    if not in_session:
        for at in range(0, len(names), 500):
            project.assets.add_custom_metadata_batch(
                [{"parent": {"filename": n}, "custom_metadata": META}
                 for n in names[at:at + 500]])
    print(f"uploaded {len(names)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
