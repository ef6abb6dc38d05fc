"""The synthetic granules follow the v006 layout of spec/icesat2-products.md, and every HDF5 reader of the
book (h5py, xarray/h5netcdf, kerchunk, VirtualiZarr, h5coro) reads the same values from them."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from is2cloud.granules import common, orbit
from is2cloud.granules.atl03 import write_atl03
from is2cloud.granules.atl06 import write_atl06
from is2cloud.granules.orbit import BEAMS, GranuleSpec, plan_granules
from granule_specs import short_spec

REPO = Path(__file__).resolve().parents[1]
FLT_MAX = np.float32(np.finfo(np.float32).max)



@pytest.fixture(scope="module")
def atl03(tmp_path_factory) -> Path:
    spec = short_spec("grandmesa.geojson", "ATL03", 3, 295, 3000)
    path = tmp_path_factory.mktemp("layout") / spec.name
    write_atl03(spec, path)
    return path


@pytest.fixture(scope="module")
def atl06(tmp_path_factory) -> Path:
    spec = short_spec("greenland_aoi.geojson", "ATL06", 3, 94, 25_000)
    path = tmp_path_factory.mktemp("layout") / spec.name
    write_atl06(spec, path)
    return path


def _all(f: h5py.File) -> tuple[dict[str, h5py.Dataset], list[str]]:
    datasets: dict[str, h5py.Dataset] = {}
    groups: list[str] = []

    def visit(name, obj):
        (datasets.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else groups.append(name))

    f.visititems(visit)
    return datasets, groups


# -- file format ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["atl03", "atl06"])
def test_superblock_v0_and_synthetic_marking(which, request):
    path: Path = request.getfixturevalue(which)
    head = path.read_bytes()[:16]
    assert head[:8] == b"\x89HDF\r\n\x1a\n"
    assert head[8] == 0, "superblock version must be 0 like the real v006 granules"
    with h5py.File(path, "r") as f:
        assert f.attrs["is2cloud_synthetic"] == b"true"
        assert b"SYNTHETIC" in f.attrs["description"] and b"SYNTHETIC" in f.attrs["history"]
        assert f.attrs["short_name"] == which.upper().encode()
        assert f.attrs["is2cloud_shortened"] == b"true"
        assert b"SHORTENED along track" in f.attrs["is2cloud_shortening"]
        assert f.attrs["Conventions"] == b"CF-1.6" and f.attrs["featureType"] == b"trajectory"
        assert f.attrs["is2cloud_surface_model"] in (b"grandmesa", b"greenland")
        # the group structure is old-style (symbol tables), as with libver "earliest"
        assert f.id.get_create_plist().get_version()[0] == 0


def test_root_attrs_of_a_whole_region_granule_say_nothing_about_shortening():
    spec = GranuleSpec("ATL06", 94, 3, 3, surface="greenland")
    assert not spec.shortened
    attrs = common.root_attrs(spec, (-50.0, 59.5, -40.0, 80.0), "2024-01-01T00:00:00Z")
    assert attrs["is2cloud_shortened"] == "false" and "is2cloud_shortening" not in attrs


# -- ATL03 ------------------------------------------------------------------------------------------------------

ATL03_HEIGHTS = {
    "delta_time": "f8", "lat_ph": "f8", "lon_ph": "f8", "h_ph": "f4", "dist_ph_along": "f4", "dist_ph_across": "f4",
    "signal_conf_ph": "i1", "quality_ph": "i1", "weight_ph": "u1", "pce_mframe_cnt": "u4", "ph_id_channel": "u1",
    "ph_id_count": "u1", "ph_id_pulse": "u1",
}
ATL03_GEOLOCATION = (
    "altitude_sc bounce_time_offset delta_time full_sat_fract near_sat_fract neutat_delay_derivative "
    "neutat_delay_total neutat_ht ph_index_beg pitch podppd_flag range_bias_corr ref_azimuth ref_elev "
    "reference_photon_index reference_photon_lat reference_photon_lon roll segment_dist_x segment_id segment_length "
    "segment_ph_cnt sigma_across sigma_along sigma_h sigma_lat sigma_lon solar_azimuth solar_elevation surf_type "
    "tx_pulse_energy tx_pulse_skew_est tx_pulse_width_lower tx_pulse_width_upper velocity_sc yaw").split()
ATL03_GEOPHYS = ("dac delta_time dem_flag dem_h geoid geoid_free2mean tide_earth tide_earth_free2mean "
                 "tide_equilibrium tide_load tide_oc_pole tide_ocean tide_pole").split()
ATL03_BCKGRD = ("bckgrd_counts bckgrd_counts_reduced bckgrd_hist_top bckgrd_int_height bckgrd_int_height_reduced "
                "bckgrd_rate delta_time pce_mframe_cnt tlm_height_band1 tlm_height_band2 tlm_top_band1 "
                "tlm_top_band2").split()


def test_atl03_tree_and_dtypes(atl03):
    with h5py.File(atl03, "r") as f:
        for beam in BEAMS:
            h = f[f"{beam}/heights"]
            assert sorted(h) == sorted(ATL03_HEIGHTS)
            for name, dtype in ATL03_HEIGHTS.items():
                assert h[name].dtype == np.dtype(dtype), (beam, name)
            n = h["h_ph"].shape[0]
            assert all(h[k].shape == (n,) for k in ATL03_HEIGHTS if k != "signal_conf_ph")
            assert h["signal_conf_ph"].shape == (n, 5)
            assert sorted(f[f"{beam}/geolocation"]) == sorted(ATL03_GEOLOCATION)
            assert sorted(f[f"{beam}/geophys_corr"]) == sorted(ATL03_GEOPHYS)
            assert sorted(f[f"{beam}/bckgrd_atlas"]) == sorted(ATL03_BCKGRD)
            assert sorted(f[f"{beam}/signal_find_output"]) == ["inlandwater", "land", "land_ice", "ocean", "sea_ice"]
            g = f[f"{beam}/geolocation"]
            m = g["segment_id"].shape[0]
            for name, dtype, shape in (("segment_id", "i4", (m,)), ("segment_ph_cnt", "i4", (m,)),
                                       ("ph_index_beg", "i8", (m,)), ("reference_photon_lat", "f8", (m,)),
                                       ("segment_dist_x", "f8", (m,)), ("segment_length", "f8", (m,)),
                                       ("solar_elevation", "f4", (m,)), ("sigma_h", "f4", (m,)),
                                       ("velocity_sc", "f4", (m, 3)), ("surf_type", "i1", (m, 5))):
                assert g[name].dtype == np.dtype(dtype) and g[name].shape == shape, (beam, name)
            assert f[f"{beam}/bckgrd_atlas/bckgrd_rate"].dtype == np.float32
        for name, dtype in (("crossing_time", "f8"), ("cycle_number", "i1"), ("lan", "f8"), ("orbit_number", "u2"),
                            ("rgt", "i2"), ("sc_orient", "i1"), ("sc_orient_time", "f8")):
            assert f[f"orbit_info/{name}"].dtype == np.dtype(dtype) and f[f"orbit_info/{name}"].shape == (1,)
        a = f["ancillary_data"]
        assert a["atlas_sdp_gps_epoch"][0] == 1198800018.0
        for name in ("data_start_utc", "data_end_utc", "granule_start_utc", "granule_end_utc", "release", "version"):
            assert a[name].dtype.kind == "S"
        assert a["release"][0] == b"006"
        for prefix in ("start", "end"):
            for name, kind in (("delta_time", "f"), ("gpssow", "f"), ("geoseg", "i"), ("gpsweek", "i"),
                               ("orbit", "i"), ("rgt", "i"), ("cycle", "i"), ("region", "i")):
                assert a[f"{prefix}_{name}"].dtype.kind == kind
        for path in ("altimetry/band_tol", "atlas_engineering/receiver/rx_bckgrd_sensitivity",
                     "atlas_engineering/transmit/tx_pulse_energy", "calibrations/dead_time/gt1l/dead_time",
                     "calibrations/first_photon_bias/gt3r/ffb_corr", "tep/tep_valid_spot",
                     "gt2r/signal_find_input/snrlow"):
            assert path in a, path
        for path in ("atlas_impulse_response/pce1_spot1/tep_histogram/tep_hist",
                     "atlas_impulse_response/pce2_spot3/tep_histogram/tep_hist_time",
                     "quality_assessment/qa_granule_pass_fail", "quality_assessment/gt1l/qa_perc_signal_conf_ph_high",
                     "ds_surf_type", "ds_xyz"):
            assert path in f, path


def test_atl03_storage_chunks_filters_fill(atl03):
    with h5py.File(atl03, "r") as f:
        datasets, groups = _all(f)
        record = {k: d for k, d in datasets.items() if k.split("/")[0] in BEAMS}
        assert len(record) >= 6 * 90
        for name, d in record.items():
            assert d.chunks == (10_000,) + d.shape[1:], name
            assert d.compression == "gzip" and d.compression_opts == 6, name
            assert not d.shuffle and not d.fletcher32, name
            assert d.maxshape == (None,) + d.shape[1:], name
        for name in ("h_ph", "dist_ph_along", "dist_ph_across"):
            d = f[f"gt1l/heights/{name}"]
            assert d.attrs["_FillValue"] == FLT_MAX and d.attrs["_FillValue"].dtype == np.float32
            assert d.fillvalue == FLT_MAX
        for name in ("lat_ph", "lon_ph", "delta_time"):
            assert "_FillValue" not in f[f"gt1l/heights/{name}"].attrs
        assert "_FillValue" not in f["gt1l/geolocation/reference_photon_lat"].attrs
        # small ancillary arrays: COMPACT (calibrations) and CONTIGUOUS
        ev = f["ancillary_data/calibrations/low_link_impulse_response/gt1l/total_events"]
        assert ev.id.get_create_plist().get_layout() == h5py.h5d.COMPACT
        assert ev.dtype == np.int64 and ev.shape == (20,) and ev[:].min() > 0
        assert ev.attrs["long_name"] == b"Total Events" and ev.attrs["source"] == b"CAL20"
        compact = sum(d.id.get_create_plist().get_layout() == h5py.h5d.COMPACT for d in datasets.values())
        assert compact >= 30
        assert f["orbit_info/rgt"].id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS
        # order of magnitude of the real files: ~1000 variables, hundreds of groups
        assert 900 <= len(datasets) <= 1200, len(datasets)
        assert 100 <= len(groups) <= 400, len(groups)


def test_atl03_attributes_and_dimension_scales(atl03):
    with h5py.File(atl03, "r") as f:
        h = f["gt1l/heights"]
        a = h["h_ph"].attrs
        assert a["units"] == b"meters" and a["long_name"] == b"Photon WGS84 height"
        assert a["contentType"] == b"physicalMeasurement" and a["coordinates"] == b"delta_time lat_ph lon_ph"
        assert "description" in a and "source" in a
        lat = h["lat_ph"].attrs
        assert lat["standard_name"] == b"latitude" and lat["units"] == b"degrees_north"
        assert lat["valid_min"] == -90.0 and lat["valid_max"] == 90.0 and lat["valid_min"].dtype == np.float64
        dt = h["delta_time"]
        assert dt.attrs["units"] == b"seconds since 2018-01-01" and dt.attrs["standard_name"] == b"time"
        assert h5py.h5ds.is_scale(dt.id)
        for name in ATL03_HEIGHTS:
            if name != "delta_time":
                assert h[name].dims[0][0] == dt, name
        assert h["signal_conf_ph"].dims[1][0].name == "/ds_surf_type"
        assert f["gt1l/geolocation/velocity_sc"].dims[1][0].name == "/ds_xyz"
        assert f["gt1l/geolocation/segment_id"].dims[0][0].name == "/gt1l/geolocation/delta_time"
        assert h5py.h5ds.is_scale(f["gt1l/bckgrd_atlas/delta_time"].id)
        assert f["gt1l/heights/quality_ph"].attrs["flag_values"].tolist() == [0, 1, 2, 3]
        g = f["gt1r"].attrs
        for key in ("Description", "atlas_beam_type", "atlas_pce", "atlas_spot_number", "atmosphere_profile",
                    "groundtrack_id", "sc_orientation"):
            assert isinstance(g[key], bytes) and g[key], key
        assert b"approximately 14m" in g["Description"]
        assert f["gt1l/heights"].attrs["Description"] == b"Contains arrays of the parameters for each received photon."
        ext = f["METADATA/Extent"].attrs
        lat_all = np.concatenate([f[f"{b}/heights/lat_ph"][:] for b in BEAMS])
        assert ext["southBoundLatitude"] <= lat_all.min() + 0.01 and ext["northBoundLatitude"] >= lat_all.max() - 0.01
        assert ext["westBoundLongitude"] < ext["eastBoundLongitude"]
        for grp in ("AcquisitionInformation/lidar", "DataQuality/CompletenessOmission", "DatasetIdentification",
                    "Lineage/ATL02", "Lineage/ANC04", "ProcessStep/PGE", "SeriesIdentification"):
            assert len(f[f"METADATA/{grp}"].attrs) >= 3 and len(f[f"METADATA/{grp}"]) == 0, grp


# -- ATL06 -------------------------------------------------------------------------------------------------------

ATL06_LI = {"atl06_quality_summary": "i1", "delta_time": "f8", "h_li": "f4", "h_li_sigma": "f4", "latitude": "f8",
            "longitude": "f8", "segment_id": "i4", "sigma_geo_h": "f4"}
ATL06_SUB = {
    "bias_correction": "fpb_mean_corr fpb_mean_corr_sigma fpb_med_corr fpb_med_corr_sigma fpb_n_corr med_r_fit "
                       "tx_mean_corr tx_med_corr",
    "dem": "dem_flag dem_h geoid_free2mean geoid_h",
    "fit_statistics": "dh_fit_dx dh_fit_dx_sigma dh_fit_dy h_expected_rms h_mean h_rms_misfit h_robust_sprd "
                      "n_fit_photons n_seg_pulses sigma_h_mean signal_selection_source signal_selection_source_status "
                      "snr snr_significance w_surface_window_final",
    "geophysical": "bckgrd bsnow_conf bsnow_h bsnow_od cloud_flg_asr cloud_flg_atm dac e_bckgrd layer_flag msw_flag "
                   "neutat_delay_total r_eff solar_azimuth solar_elevation tide_earth tide_earth_free2mean "
                   "tide_equilibrium tide_load tide_ocean tide_pole",
    "ground_track": "ref_azimuth ref_coelv seg_azimuth sigma_geo_at sigma_geo_r sigma_geo_xt x_atc y_atc",
}


def test_atl06_tree_dtypes_storage(atl06):
    with h5py.File(atl06, "r") as f:
        datasets, groups = _all(f)
        for beam in BEAMS:
            li = f[f"{beam}/land_ice_segments"]
            for name, dtype in ATL06_LI.items():
                assert li[name].dtype == np.dtype(dtype), name
            for sub, names in ATL06_SUB.items():
                assert sorted(li[sub]) == sorted(names.split()), sub
            n = li["h_li"].shape[0]
            for name in ("ground_track/x_atc", "ground_track/y_atc", "fit_statistics/n_fit_photons",
                         "geophysical/bsnow_conf", "fit_statistics/dh_fit_dx"):
                assert li[name].shape == (n,)
            assert li["ground_track/x_atc"].dtype == np.float64 and li["ground_track/y_atc"].dtype == np.float32
            assert li["fit_statistics/n_fit_photons"].dtype == np.int32
            assert li["geophysical/bsnow_conf"].dtype == np.int8
            assert sorted(f[f"{beam}/residual_histogram"]) == sorted(
                "bckgrd_per_m bin_top_h count delta_time ds_segment_id lat_mean lon_mean pulse_count "
                "segment_id_list x_atc_mean".split())
            assert "signal_selection_status/signal_selection_status_all" in f[f"{beam}/segment_quality"]
        for name in ATL06_LI:
            d = f[f"gt1l/land_ice_segments/{name}"]
            assert d.chunks == (10_000,) and d.maxshape == (None,)
            assert d.compression == "gzip" and d.compression_opts == 6 and not d.shuffle
        h = f["gt1l/land_ice_segments/h_li"]
        assert h.attrs["_FillValue"] == FLT_MAX and h.fillvalue == FLT_MAX and h.attrs["units"] == b"meters"
        assert h.attrs["long_name"] == b"Land Ice height"
        assert h.attrs["coordinates"] == b"segment_id delta_time latitude longitude"
        assert "_FillValue" not in f["gt1l/land_ice_segments/latitude"].attrs
        assert f["gt1l/land_ice_segments/atl06_quality_summary"].attrs["flag_meanings"] == b"best_quality potential_problem"
        dt = f["gt1l/land_ice_segments/delta_time"]
        assert h5py.h5ds.is_scale(dt.id)
        assert f["gt1l/land_ice_segments/fit_statistics/h_mean"].dims[0][0] == dt
        assert f["gt1l/residual_histogram/count"].dims[1][0].name == "/gt1l/residual_histogram/bin_top_h"
        a = f["ancillary_data"]
        assert a["atlas_sdp_gps_epoch"][0] == 1198800018.0 and a["release"][0] == b"006"
        assert "land_ice/fit_maxiter" in a and "qa_at_interval" in a
        assert "quality_assessment/gt2l/signal_selection_source_fraction_3" in f
        assert f["orbit_info/rgt"][0] == 94 and f["orbit_info/cycle_number"][0] == 3
        assert 450 <= len(datasets) <= 800 and 80 <= len(groups) <= 250


# -- readers --------------------------------------------------------------------------------------------------

READ_CASES = [
    ("atl06", "gt1l/land_ice_segments", "h_li"),
    ("atl06", "gt1l/land_ice_segments", "latitude"),
    ("atl06", "gt2r/land_ice_segments", "delta_time"),
    ("atl06", "gt1l/land_ice_segments", "atl06_quality_summary"),
    ("atl06", "gt3l/land_ice_segments/fit_statistics", "h_mean"),
    ("atl03", "gt1r/heights", "h_ph"),
    ("atl03", "gt1r/heights", "signal_conf_ph"),
    ("atl03", "gt2l/heights", "lat_ph"),
    ("atl03", "gt2l/geolocation", "ph_index_beg"),
]


_REFS: dict[Path, dict] = {}


def _kerchunk(path: Path, group: str, name: str) -> np.ndarray:
    import zarr
    from kerchunk.hdf import SingleHdf5ToZarr
    from kerchunk.utils import refs_as_store

    if path not in _REFS:  # translating ~1000 variables takes seconds: once per file
        with open(path, "rb") as fh:
            _REFS[path] = SingleHdf5ToZarr(fh, f"file://{path}", inline_threshold=300).translate()
    root = zarr.open_group(refs_as_store(_REFS[path], remote_protocol="file"), mode="r", zarr_format=2)
    return np.asarray(root[f"{group}/{name}"][...])


def _virtualizarr(path: Path, group: str, name: str) -> np.ndarray:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({"file://": LocalStore()})
    store = HDFParser(group=group)(f"file://{path}", registry)
    ds = xr.open_dataset(store, engine="zarr", consolidated=False, zarr_format=3, mask_and_scale=False,
                         decode_times=False)
    return ds[name].values


def _h5coro(path: Path, group: str, name: str) -> np.ndarray:
    from h5coro import filedriver, h5coro

    h5obj = h5coro.H5Coro(str(path), filedriver.FileDriver, errorChecking=True)
    try:
        promise = h5obj.readDatasets([f"/{group}/{name}"], block=True)
        return np.asarray(promise[f"/{group}/{name}"])
    finally:
        h5obj.close()


@pytest.mark.parametrize("which,group,name", READ_CASES)
def test_local_readers_agree(which, group, name, request):
    path: Path = request.getfixturevalue(which)
    with h5py.File(path, "r") as f:
        want = f[f"{group}/{name}"][...]
    assert want.size > 0
    got = {
        "xarray(h5netcdf)": xr.open_dataset(path, engine="h5netcdf", group=group, decode_cf=False,
                                            phony_dims="access")[name].values,
        "kerchunk": _kerchunk(path, group, name),
        "virtualizarr": _virtualizarr(path, group, name),
        "h5coro": _h5coro(path, group, name),
    }
    for reader, values in got.items():
        values = np.asarray(values)
        if reader == "h5coro" and values.shape != want.shape:
            values = values.reshape(want.shape)
        assert values.dtype == want.dtype, (reader, values.dtype, want.dtype)
        np.testing.assert_array_equal(values, want, err_msg=f"{reader} read different values for {group}/{name}")


def test_xarray_decodes_cf_like_the_real_files(atl06, atl03):
    ds = xr.open_dataset(atl06, engine="h5netcdf", group="gt1l/land_ice_segments")
    assert np.issubdtype(ds["delta_time"].dtype, np.datetime64)
    assert {"latitude", "longitude", "segment_id"} <= set(ds.coords)
    assert ds["h_li"].encoding["_FillValue"] == FLT_MAX and np.isfinite(ds["h_li"].values).all()
    t = orbit.delta_time_to_datetime(float(xr.open_dataset(atl06, engine="h5netcdf", group="gt1l/land_ice_segments",
                                                           decode_times=False)["delta_time"][0]))
    assert abs(np.datetime64(t.replace(tzinfo=None), "ns") - ds["delta_time"].values[0]) < np.timedelta64(1, "ms")
    fs = xr.open_dataset(atl06, engine="h5netcdf", group="gt1l/land_ice_segments/fit_statistics")
    assert fs["h_mean"].dims == ("delta_time",)
    h = xr.open_dataset(atl03, engine="h5netcdf", group="gt1l/heights", mask_and_scale=False)
    assert h["signal_conf_ph"].dims == ("delta_time", "ds_surf_type")
    geo = xr.open_dataset(atl03, engine="h5netcdf", group="gt1l/geolocation")
    assert geo["velocity_sc"].dims == ("delta_time", "ds_xyz") and geo["surf_type"].dims[1] == "ds_surf_type"


def test_kerchunk_inlines_compact_calibrations(atl03):
    with h5py.File(atl03, "r") as f:
        want = f["ancillary_data/calibrations/low_link_impulse_response/gt2l/total_events"][...]
    got = _kerchunk(atl03, "ancillary_data/calibrations/low_link_impulse_response/gt2l", "total_events")
    np.testing.assert_array_equal(got, want)
