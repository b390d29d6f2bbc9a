"""Device and node profiles: memory, compute, link and power figures, each with its source.

``mcu``, ``soc`` and ``mobile`` keep the seed tutorial's memory, MFLOP/s, battery and
bandwidth; the other built-ins take every figure from the datasheets, measurements and
papers cited in ``source`` (docs/profiles.md shows the arithmetic behind each number).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Profile(BaseModel):
    """What one kind of node can do and what each phase costs it (units in the names)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    memory_kb: float = Field(gt=0, description="memory available for training, KiB")
    compute_mflops: float = Field(gt=0, description="sustained training throughput, 10^6 FLOP/s")
    bandwidth_kbps: float = Field(
        gt=0, description="access link bandwidth, each direction unless given apart, 10^3 bit/s"
    )
    uplink_kbps: float | None = Field(
        default=None, gt=0, description="device-to-network bandwidth; bandwidth_kbps if unset"
    )
    downlink_kbps: float | None = Field(
        default=None, gt=0, description="network-to-device bandwidth; bandwidth_kbps if unset"
    )
    latency_ms: float = Field(ge=0, description="access link one-way latency, ms")
    battery_mah: float | None = Field(
        default=None, gt=0, description="battery capacity, mAh; omit for mains-powered nodes"
    )
    voltage_v: float = Field(gt=0, description="battery (or supply) voltage, V")
    power_compute_w: float = Field(ge=0, description="power while training, W")
    power_tx_w: float = Field(ge=0, description="power while sending, W")
    power_rx_w: float = Field(ge=0, description="power while receiving, W")
    power_idle_w: float = Field(ge=0, description="power while none of the above, W")
    tail_s: float = Field(
        default=0.0,
        ge=0,
        description="time the radio stays in its high-power tail after a transfer, s",
    )
    power_tail_w: float = Field(default=0.0, ge=0, description="power during the radio tail, W")
    charge_w: float = Field(
        default=0.0, ge=0, description="power into the battery while plugged in to a charger, W"
    )
    mean_online_s: float | None = Field(
        default=None, gt=0, description="markov availability: this profile's mean online span, s"
    )
    mean_offline_s: float | None = Field(
        default=None, gt=0, description="markov availability: this profile's mean offline span, s"
    )
    source: str = Field(default="", description="where the figures come from")

    @property
    def mains_powered(self) -> bool:
        """True for nodes without a battery (edges, cloud, plugged-in boards)."""
        return self.battery_mah is None

    @property
    def up_kbps(self) -> float:
        """Effective uplink bandwidth, kbps: ``uplink_kbps``, else ``bandwidth_kbps``."""
        return self.bandwidth_kbps if self.uplink_kbps is None else self.uplink_kbps

    @property
    def down_kbps(self) -> float:
        """Effective downlink bandwidth, kbps: ``downlink_kbps``, else ``bandwidth_kbps``."""
        return self.bandwidth_kbps if self.downlink_kbps is None else self.downlink_kbps


BUILTIN_PROFILES: dict[str, Profile] = {
    "mcu": Profile(
        memory_kb=512,
        compute_mflops=100,
        bandwidth_kbps=100,
        latency_ms=50,
        battery_mah=500,
        voltage_v=3.7,
        power_compute_w=0.20,
        power_tx_w=0.95,
        power_rx_w=0.30,
        power_idle_w=0.0008,
        source=(
            "ESP32-S3 class MCU (512 KB SRAM, 240 MHz). Memory, MFLOP/s, battery and bandwidth: "
            "seed tutorial 066. Power: Espressif ESP32-S3 datasheet v1.9, Table 5-8/5-9/5-10 "
            "(Wi-Fi TX ~285 mA, RX ~90 mA, CPU active ~60 mA, light-sleep ~240 uA at 3.3 V)."
        ),
    ),
    "soc": Profile(
        memory_kb=4096,
        compute_mflops=5000,
        bandwidth_kbps=10000,
        latency_ms=20,
        battery_mah=5000,
        voltage_v=3.7,
        power_compute_w=6.4,
        power_tx_w=3.6,
        power_rx_w=3.2,
        power_idle_w=2.7,
        source=(
            "Raspberry Pi 4 Model B class SoC. Memory, MFLOP/s, battery and bandwidth: seed "
            "tutorial 066. Power: measured at the 5 V input by the Raspberry Pi Foundation "
            "(product brief) and J. Geerling's Pi 4 power tests: idle 2.7 W, all-core load "
            "6.4 W, Wi-Fi transfer about 3.2-3.6 W."
        ),
    ),
    "mobile": Profile(
        memory_kb=8192,
        compute_mflops=50000,
        bandwidth_kbps=50000,
        latency_ms=30,
        battery_mah=4000,
        voltage_v=3.85,
        power_compute_w=3.5,
        power_tx_w=1.6,
        power_rx_w=1.1,
        power_idle_w=0.025,
        source=(
            "Smartphone. Memory, MFLOP/s, battery and bandwidth: seed tutorial 066. Power: "
            "Huang et al., MobiSys 2012 (LTE uplink ~1.6 W, downlink ~1.1 W at these rates); "
            "Carroll & Heiser, USENIX ATC 2010 (suspend ~25 mW); CPU under sustained load "
            "3-4 W (AI Benchmark, Ignatov et al. ICCV 2019 workshop, power section)."
        ),
    ),
    "edge_server": Profile(
        memory_kb=32 * 1024 * 1024,
        compute_mflops=1_400_000,
        bandwidth_kbps=1_000_000,
        latency_ms=1,
        voltage_v=19.0,
        power_compute_w=30.0,
        power_tx_w=12.0,
        power_rx_w=12.0,
        power_idle_w=10.0,
        source=(
            "NVIDIA Jetson AGX Xavier (32 GB, mains-powered). FP32 ~1.4 TFLOP/s and the 30 W "
            "power mode from NVIDIA's Jetson AGX Xavier module datasheet; idle ~10 W; "
            "gigabit Ethernet."
        ),
    ),
    "esp32s3_wifi": Profile(
        memory_kb=512,
        compute_mflops=60,
        bandwidth_kbps=20_000,
        latency_ms=5,
        battery_mah=500,
        voltage_v=3.7,
        power_compute_w=0.20,
        power_tx_w=0.95,
        power_rx_w=0.30,
        power_idle_w=0.0008,
        source=(
            "ESP32-S3 (512 KB SRAM, 240 MHz) on 2.4 GHz Wi-Fi. Link: ESP-IDF Programming Guide, "
            "Wi-Fi Driver, ESP32-S3 Wi-Fi throughput table: TCP TX and RX 20 Mbit/s air in lab. "
            "Compute: madflight TestFLOPS (qqqlab/madflight, tools/TestFLOPS) measured "
            "61.43 MFLOP/s on an ESP32-S3 at 240 MHz. Power: as the mcu profile (ESP32-S3 "
            "datasheet). Latency 5 ms and a 500 mAh LiPo are assumptions."
        ),
    ),
    "rpi4": Profile(
        memory_kb=4 * 1024 * 1024,
        compute_mflops=8000,
        bandwidth_kbps=941_000,
        latency_ms=1,
        voltage_v=5.0,
        power_compute_w=6.4,
        power_tx_w=3.2,
        power_rx_w=3.2,
        power_idle_w=2.9,
        source=(
            "Raspberry Pi 4 Model B 4 GB on gigabit Ethernet, mains-powered. Compute: HPL "
            "about 8 GFLOP/s on Raspberry Pi OS 64-bit (B. Feiereisen, 'Benchmarking the "
            "Raspberry Pi 4', 2022). Link: iperf3 941 Mbit/s (mpr-projects.com, 'RPi NAS part "
            "3', 2024). Power at 5 V: idle 575 mA, 400% CPU 1280 mA (linuxhint.com, 'power "
            "consumption of Raspberry Pi'). Transfer power idle + 0.3 W and 1 ms latency are "
            "assumptions."
        ),
    ),
    "phone_lte": Profile(
        memory_kb=2 * 1024 * 1024,
        compute_mflops=50_000,
        bandwidth_kbps=6000,
        uplink_kbps=6000,
        downlink_kbps=13_000,
        latency_ms=30,
        battery_mah=4000,
        voltage_v=3.85,
        power_compute_w=3.5,
        power_tx_w=3.918,
        power_rx_w=1.964,
        power_idle_w=0.025,
        tail_s=11.576,
        power_tail_w=1.060,
        source=(
            "Smartphone on LTE. Rates: median uplink 6 and downlink 13 Mbit/s (Huang et al., "
            "'A Close Examination of Performance and Power Characteristics of 4G LTE "
            "Networks', MobiSys 2012). Radio power from that paper's LTE model "
            "P = 438.39 mW/Mbps * up + 51.97 mW/Mbps * down + 1288.04 mW, and its tail: "
            "11.576 s at 1060 mW. Compute and CPU power as the mobile profile; suspend "
            "25 mW (Carroll & Heiser, USENIX ATC 2010). 2 GiB for training, 30 ms latency "
            "and the 4000 mAh cell are assumptions."
        ),
    ),
    "nbiot_node": Profile(
        memory_kb=256,
        compute_mflops=31,
        bandwidth_kbps=20,
        uplink_kbps=25,
        downlink_kbps=20,
        latency_ms=1000,
        battery_mah=2000,
        voltage_v=3.7,
        power_compute_w=0.011,
        power_tx_w=0.17,
        power_rx_w=0.17,
        power_idle_w=0.00001,
        source=(
            "Sensor node on NB-IoT (Nordic nRF9160: Cortex-M33 at 64 MHz, 256 KB RAM). "
            "Rates: Cat-NB1 peaks of about 200 kbit/s down and 250 kbit/s up, sustained "
            "about ten times less (Anritsu, 'Determining peak data rates for NB-IoT'). "
            "Power at 3.7 V: 45 mA balanced TX/RX at 10 dBm, PSM floor 2.7 uA (nRF9160 "
            "product specification, modem current consumption). Compute: madflight "
            "TestFLOPS 82.57 MFLOP/s on a 168 MHz Cortex-M4F, scaled to 64 MHz. CPU power, "
            "1 s latency and the 2000 mAh cell are assumptions."
        ),
    ),
    "jetson_edge": Profile(
        memory_kb=8 * 1024 * 1024,
        compute_mflops=2_088_960,
        bandwidth_kbps=1_000_000,
        latency_ms=1,
        voltage_v=19.0,
        power_compute_w=25.0,
        power_tx_w=7.0,
        power_rx_w=7.0,
        power_idle_w=7.0,
        source=(
            "NVIDIA Jetson Orin Nano 8 GB (Super), mains-powered edge server, gigabit "
            "Ethernet. 8 GB LPDDR5, 1024 CUDA cores (Jetson Orin Nano module data sheet); "
            "1.02 GHz GPU clock and 7-25 W power modes with JetPack 6.1 'Super' (NVIDIA's "
            "Super Developer Kit data sheet, Dec 2024, as summarised by B. Sapui's 'Jetson "
            "Orin Nano Super' deep dive). FP32 peak 1024 * 2 * 1.02e9 = 2.09 TFLOP/s. "
            "Training at 25 W; idle and transfers taken at the 7 W mode's cap."
        ),
    ),
}
