from setuptools import find_packages, setup

setup(
    name="mnemo",
    version="0.1.0",
    description="Distributed class-incremental learning with mnemonics exemplars (Liu et al., CVPR 2020)",
    python_requires=">=3.10",
    packages=find_packages(include=["core*", "launch*", "trainer*", "data_pipeline*", "exemplars*", "mnemo*",
                                            "benchmarks*", "analysis*", "reporting*"]),
    package_data={"data_pipeline.convert": ["glyph_font_blocklist.txt"]},
    entry_points={"console_scripts": ["mnemo=mnemo.cli:main"]},
)
