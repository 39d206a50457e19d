"""Every user-facing choice and default of SegSHAP, in one place (no imports: every layer may read it).

The request (``explain.request.ExplainRequest``), the CLI parsers (``cli/``), the cohort manifest, the panel values
(``SegSHAPMRML.panel.PanelValues``) and the Slicer parameter node (``SegSHAP.py``) take their choices and
defaults from here, so changing one here changes it everywhere (test_options.py shows it). The Slicer .ui file
keeps its own combo items; test_options.py checks them against the choices below.
"""

# ------------------------------------------------------------------------------------------------ choices
UNIT_TYPES = ("organs", "fcc", "hybrid", "slic", "slic-hybrid")
ORGAN_UNIT_TYPES = ("organs", "hybrid", "slic-hybrid")   # the unit types built from an organ map
SLIC_UNIT_TYPES = ("slic", "slic-hybrid")        # the unit types built from SLIC supervoxels
REMOVALS = ("constant", "blur", "mean")          # --removal: what a removed unit's voxels become
VALUE_FUNCTIONS = ("softdice", "tp", "fp", "dice")
ALL_VALUES = "all"                               # --value all: every value function, in ALL_VALUES_ORDER
ALL_VALUES_ORDER = ("softdice", "tp", "dice", "fp")
VALUE_CHOICES = (ALL_VALUES, *VALUE_FUNCTIONS)      # the panel's and the parameter node's value choices
BUDGET_AUTO = "auto"                             # --budget auto: run until converged, at most --cap coalitions
SCORE_REGIONS = ("box", "component", "dilated")
POINT_SPACES = ("ras", "ijk")
CACHE_MODES = ("memo", "baseline", "none")
PROGRESS_FORMATS = ("bar", "json")               # segshap explain --progress: a tqdm bar or JSON lines
ROI_MODES = ("point", "segment")                 # the panel's ROI: a markups point or a segment

# Organ grouping: the panel's choice -> the request's ``grouping`` (None: every organ label is a unit).
GROUPING_DEFAULT_GROUPS = "default"              # the built-in grouping's name on the CLI and in the manifest
GROUPING_FROM_FILE = "from file"
BUILTIN_GROUPING_OF_CHOICE = {"individual organs": None, "default groups": GROUPING_DEFAULT_GROUPS,
                              "organ systems": "systems"}
GROUPING_CHOICES = (*BUILTIN_GROUPING_OF_CHOICE, GROUPING_FROM_FILE)

# Devices: the CLI takes cpu, cuda, cuda:N or auto; the panel offers Auto, CPU and one entry per GPU.
DEVICE_CHOICES_FIXED = ("Auto", "CPU")
ORGAN_MAP_DEVICES = ("cpu", "gpu")               # segshap organs (TotalSegmentator's --device)

# ------------------------------------------------------------------------------------------------ defaults
UNITS = "organs"                                 # the fewest units, hence the fastest first explanation
VALUE = ALL_VALUES                               # one value function, a comma-separated list, or all
SCORE_REGION = "box"
POINT_SPACE = "ras"
TARGET = "1"
ROI_MODE = "point"
GROUPING_CHOICE = "individual organs"            # the panel's; the request's grouping is None (the same)
DILATE_MM = 6.0
FCC_SCALE_MM = 30.0
SLIC_SIZE_MM = 30.0                              # --slic-size-mm: mean supervoxel volume = an FCC cell's at this scale
SLIC_COMPACTNESS = 0.1                           # --slic-compactness: scikit-image's, intensities rescaled to [0, 1]
SLIC_HU_WINDOW = (-200.0, 300.0)                 # SLIC sees the CT clipped to this window (soft tissue sets the scale)
BUDGET = 256
MIN_BUDGET = 8
AUTO_CAP = 2048                                  # --cap: most coalitions of --budget auto
TOLERANCE = 0.01                                 # --tolerance: standard-error goal relative to |v(full) - v(empty)|
SEED = 0
MASK_VALUE = -1024.0                             # HU given to removed units (air) by --removal constant
REMOVAL = "constant"
BLUR_SIGMA_MM = 20.0                             # --blur-sigma-mm: Gaussian sigma of --removal blur
BATCH_SIZE = 1                                   # network patches per forward (1 reproduces nnU-Net bit for bit)
DEVICE = "cpu"                                   # the CLI's and the request's
PANEL_DEVICE = "Auto"                            # the panel's
PANEL_BUDGET_AUTO = True                         # the panel's budget is the cap of --budget auto (until converged)
ORGAN_MAP_DEVICE = "cpu"
CACHE = "memo"
MEMO_BYTES = 1 << 30                             # the patch memo's bound on its evictable entries (bytes)
CASE_CACHE = None                                # --case-cache: None = $SEGSHAP_CACHE_DIR, else ~/.cache/segshap
PROGRESS_FORMAT = "bar"
TTA = False
TILE_STEP = 0.5                                  # nnU-Net's sliding-window step
CHECKPOINT = "checkpoint_final.pth"              # the file in each fold_X, nnU-Net's own default for -chk
VERIFY = 0
FAITHFULNESS_STEPS = 10
DEMO_BUDGET = 512                                # segshap demo's organ explanation: 2^9, exact for its 9 units
DEMO_ZOOM_BUDGET = 576                           # segshap demo's zoom: 62 cell patterns for its control + 514 sampled

# Cohort studies (segshap cohort run)
EXECUTORS = ("local", "ray")
EXECUTOR = "local"
MAX_RETRIES = 2                                  # starts of a crashed or killed explanation after the first
GPUS_PER_TASK = 0.0                              # 0 = CPU
CPUS_PER_TASK = 1                                # ray: torch threads per explanation
MIN_ORGAN_VOXELS = 10                            # an organ piece under this many voxels in the support merges
