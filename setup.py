"""Maps the design card's top-level folders under the single ``genops`` import package.

``proxy/`` becomes ``genops.proxy``, ``storage/`` becomes ``genops.storage`` and so on,
so nothing with a generic name (``proxy``, ``storage``) lands in site-packages.
Works for wheels and for editable installs alike.
"""

from setuptools import find_packages, setup

ROOTS = {
    "genops": "src/genops",
    "genops.proxy": "proxy",
    "genops.storage": "storage",
    "genops.collectors": "collectors",
    "genops.api": "api",
    "genops.runtime": "runtime",
    "genops.dashboards": "dashboards",
}

packages: list[str] = []
package_dir: dict[str, str] = {}
for package, folder in ROOTS.items():
    package_dir[package] = folder
    packages.append(package)
    packages.extend(f"{package}.{sub}" for sub in find_packages(folder))

setup(
    packages=packages,
    package_dir=package_dir,
    # Data files anywhere below a package (migrations/*.sql, dashboard JSON, tokenizer files...).
    package_data={"": [f"{glob}.{ext}" for glob in ("*", "**/*")
                       for ext in ("sql", "json", "yaml", "yml", "tiktoken", "tiktoken.gz", "txt", "jsonl", "toml", "proto")]},
    include_package_data=True,
)
