"""Print zsexp's requirements (pyproject.toml, with the dev extra) without their upper bounds, one a line
for `make test-latest`: the newest releases pip finds, beyond the versions tested.  torch keeps
its bound: past it pip pulls a multi-GB CUDA build."""

import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["dev"]:
    print(req if req.startswith("torch") else re.sub(r",\s*<[^,]*", "", req))
