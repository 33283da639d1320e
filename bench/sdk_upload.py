"""The baseline of the upload benchmark: what a user writes with the official Datature SDK.

Uploads every *.jpg of a folder with `create_upload_session()` + `add_bytes(...)` and the
same custom metadata edgecap sends, to the server at DATATURE_API_BASE_URL, and waits for
the operation like the SDK does by default.

usage: python sdk_upload.py FOLDER SECRET PROJECT_ID
"""

import os
import sys

from datature.nexus import Client


def main() -> int:
    folder, secret, project_id = sys.argv[1:4]
    project = Client(secret).get_project(project_id)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))
    with project.assets.create_upload_session() as session:
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                data = f.read()
            session.add_bytes(
                data,
                name,
                custom_metadata={"site": "bench", "camera": "cam0", "device": "bench01"},
            )
    print(f"uploaded {len(names)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
