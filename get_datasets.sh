#!/usr/bin/env bash
# Fetch the data sets listed in dlmie/data/catalog.tsv into datasets/ (or $DLMIE_DATA).
# Run ./get_datasets.sh --help for usage. dlmie.data (Python) reads the same catalog and
# applies the same "present" rule, so dataset_path() finds what this script put in place.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ./get_datasets.sh [NAME...]     fetch the default data sets, or the named ones
       ./get_datasets.sh --list        show every data set: name, size, default, present/missing
       ./get_datasets.sh --help

Data sets come from dlmie/data/catalog.tsv and go to datasets/ in the repository, or to
$DLMIE_DATA if set (the folder Python's dlmie.data.data_root() uses too). A data set that is
already present is not fetched again; an interrupted run can simply be rerun.

Environment:
  DLMIE_DATA=DIR     where the data sets go (default: datasets/ beside this script)
  DLMIE_MIRROR=SRC   take each file of the same name from SRC instead of upstream: a local
                     folder, or a URL base (http://, https://, file://). Where SRC has a
                     SHA256SUMS file, every file taken from it is checked against it. A file that
                     SRC lacks is downloaded from upstream. Unset: ../shared/datasets beside the
                     repository is used if it exists. Set but empty: always download upstream.
EOF
}

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
CATALOG=$REPO/dlmie/data/catalog.tsv
DATA=$(realpath -m -- "${DLMIE_DATA:-$REPO/datasets}")
# An unpacked zip gets a marker here once all of its contents are in place: its folder alone
# could be half-filled (e.g. flickr8k is two zips unpacked into one folder).
MARKERS=$DATA/.installed

say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- the catalog ---------------------------------------------------------------------------

# Rows in parallel arrays, indexed by row number. Every field is non-empty ("-" = empty),
# so reading with IFS=tab (which merges repeated tabs) cannot shift a column.
R_NAME=() R_DEFAULT=() R_SIZE=() R_PATH=() R_INSTALL=() R_DEST=() R_FILE=() R_URL=() R_MEMBER=() R_NOTE=()

load_catalog() {
    [[ -r $CATALOG ]] || die "catalog not found: $CATALOG"
    local line header_seen="" name default size path install dest file url member note
    while IFS= read -r line || [[ -n $line ]]; do
        [[ -z $line || $line == \#* ]] && continue
        if [[ -z $header_seen ]]; then header_seen=1; continue; fi   # the column names
        IFS=$'\t' read -r name default size path install dest file url member note <<<"$line"
        R_NAME+=("$name") R_DEFAULT+=("$default") R_SIZE+=("$size") R_PATH+=("$path")
        R_INSTALL+=("$install") R_DEST+=("$dest") R_FILE+=("$file") R_URL+=("$url")
        R_MEMBER+=("$member") R_NOTE+=("$note")
    done <"$CATALOG"
}

# Data set names, once each, in catalog order (only those with default=yes if $1 = default).
dataset_names() {
    local i seen=" "
    for i in "${!R_NAME[@]}"; do
        [[ $seen == *" ${R_NAME[i]} "* ]] && continue
        [[ ${1-} == default && ${R_DEFAULT[i]} != yes ]] && continue
        seen+="${R_NAME[i]} "
        say "${R_NAME[i]}"
    done
}

rows_of() {  # NAME -> the row numbers of data set NAME
    local i
    for i in "${!R_NAME[@]}"; do [[ ${R_NAME[i]} == "$1" ]] && say "$i"; done
    return 0
}

first_row() {  # NAME -> the first row of data set NAME (for the columns its rows share)
    local i
    for i in "${!R_NAME[@]}"; do [[ ${R_NAME[i]} == "$1" ]] && { say "$i"; return 0; }; done
    return 1
}

# Is row i installed? Files are renamed into place only when verified, so their existence is
# enough; unzipped rows need their marker. (Same rule as dlmie.data._row_present.)
row_done() {
    local i=$1
    [[ -e $DATA/${R_PATH[i]} ]] || return 1
    if [[ ${R_INSTALL[i]} == unzip ]]; then
        [[ -e $MARKERS/${R_FILE[i]} ]]
    else
        [[ -e $DATA/${R_DEST[i]} ]]
    fi
}

is_present() {  # NAME
    local i
    for i in $(rows_of "$1"); do row_done "$i" || return 1; done
}

list_datasets() {
    local name i
    say "Data sets in $DATA (catalog: $CATALOG)"
    printf '%-26s %-9s %-8s %s\n' NAME SIZE DEFAULT STATUS
    while read -r name; do
        i=$(first_row "$name")
        printf '%-26s %-9s %-8s %s\n' "$name" "${R_SIZE[i]}" "${R_DEFAULT[i]}" \
            "$(is_present "$name" && echo present || echo missing)"
    done < <(dataset_names)
}

# --- where files come from -----------------------------------------------------------------

MIRROR="" MIRROR_KIND=none SUMS=""   # SUMS: the mirror's SHA256SUMS (a local copy for a URL), if any
GOT_FROM=""                          # where the last file came from (written into markers)

resolve_mirror() {
    local why="DLMIE_MIRROR"
    if [[ -n ${DLMIE_MIRROR+set} ]]; then
        MIRROR=$DLMIE_MIRROR
    elif [[ -d $REPO/../shared/datasets ]]; then
        MIRROR=$(cd -- "$REPO/../shared/datasets" && pwd -P)
        why="DLMIE_MIRROR unset: ../shared/datasets"
    fi
    case $MIRROR in
        "") MIRROR_KIND=none
            say "Source: upstream (no mirror)" ;;
        http://* | https://* | file://*)
            MIRROR_KIND=url MIRROR=${MIRROR%/}
            say "Source: mirror $MIRROR ($why), upstream for files it lacks"
            SUMS=$(mktemp)
            curl -fsSL -o "$SUMS" -- "$MIRROR/SHA256SUMS" 2>/dev/null || { rm -f -- "$SUMS"; SUMS=""; } ;;
        *)  [[ -d $MIRROR ]] || die "DLMIE_MIRROR=$MIRROR is neither a folder nor an http(s):// or file:// URL"
            MIRROR_KIND=dir
            say "Source: mirror folder $MIRROR ($why), upstream for files it lacks"
            [[ -f $MIRROR/SHA256SUMS ]] && SUMS=$MIRROR/SHA256SUMS ;;
    esac
    if [[ $MIRROR_KIND != none && -z $SUMS ]]; then
        say "  (the mirror has no SHA256SUMS: files taken from it are not verified)"
    fi
}

human_size() { numfmt --to=iec --suffix=B --format=%.1f "$(stat -c %s -- "$1")"; }

# curl with a progress bar on a terminal, quiet (errors only) in logs.
curl_get() {  # URL OUT
    local progress=(-sS)
    [[ -t 2 ]] && progress=(--progress-bar)
    curl -fL --retry 2 --connect-timeout 30 "${progress[@]}" -o "$2" -- "$1"
}

# unzip catches Ctrl-C and exits 80 instead of dying of SIGINT, so bash would not see the
# interrupt: turn that into exit 130 (interrupted) so the run stops instead of going on.
unzip_() {
    local rc=0
    unzip "$@" || rc=$?
    ((rc != 80)) || exit 130
    return "$rc"
}

hex_at() { od -An -tx1 -j "$2" -N "$3" -- "$1" | tr -d ' \n'; }   # FILE OFFSET COUNT

# Cheap completeness check by file type, so a truncated or wrong download is never put in place.
check_format() {  # FILE NAME (NAME's extension says what FILE should be)
    case $2 in
        *.zip | *.npz) unzip_ -tq "$1" >/dev/null 2>&1 ;;
        *.h5) [[ $(hex_at "$1" 0 8) == 894844460d0a1a0a ]] ;;   # HDF5 signature \x89HDF\r\n\x1a\n
        *.tflite) [[ $(hex_at "$1" 4 4) == 54464c33 ]] ;;        # flatbuffer identifier "TFL3"
        *.json) ! command -v python3 >/dev/null ||
            python3 -c 'import json, sys; json.load(open(sys.argv[1], "rb"))' "$1" 2>/dev/null ;;
        *) [[ -s $1 ]] ;;
    esac
}

# Check PART (a copy of mirror file FILE) against the mirror's SHA256SUMS, if it lists FILE.
verify_sum() {  # FILE PART
    local want got
    [[ -n $SUMS ]] || return 0
    want=$(awk -v f="$1" '{ n = $2; sub(/^\*/, "", n) } n == f { print $1; exit }' "$SUMS")
    if [[ -z $want ]]; then
        say "  $1: not listed in the mirror's SHA256SUMS, unverified"
        return 0
    fi
    got=$(sha256sum -- "$2" | cut -d ' ' -f 1)
    if [[ $got != "$want" ]]; then
        rm -f -- "$2"
        die "checksum mismatch for $1 from $MIRROR (expected $want, got $got); deleted $(basename -- "$2"). The mirror's copy is damaged or its SHA256SUMS is out of date: fix the mirror, or unset DLMIE_MIRROR to download upstream."
    fi
    say "  $1: sha256 OK"
}

# Put mirror file FILE at OUT (through OUT.part, verified). Returns 1 if the mirror lacks FILE.
from_mirror() {  # FILE OUT
    local file=$1 out=$2 part=$2.part
    case $MIRROR_KIND in
        none) return 1 ;;
        dir)
            [[ -f $MIRROR/$file ]] || return 1
            say "  copying $file from the mirror ($(human_size "$MIRROR/$file"))"
            cp -- "$MIRROR/$file" "$part" || die "could not copy $MIRROR/$file"
            chmod u+w -- "$part" ;;   # mirror files may be read-only
        url)
            say "  downloading $MIRROR/$file"
            local rc=0
            curl_get "$MIRROR/$file" "$part" || rc=$?
            if ((rc)); then
                rm -f -- "$part"
                # 22: an HTTP error such as 404, 37: no such file (file://): the mirror lacks it.
                ((rc == 22 || rc == 37)) && return 1
                die "could not download $MIRROR/$file (curl exit $rc); deleted the partial download. Check the mirror and rerun, or unset DLMIE_MIRROR to download upstream."
            fi ;;
    esac
    verify_sum "$file" "$part"
    check_format "$part" "$file" || { rm -f -- "$part"; die "$file from $MIRROR is damaged or incomplete (not a valid ${file##*.} file); deleted it. Fix the mirror, or unset DLMIE_MIRROR to download upstream."; }
    mv -- "$part" "$out" || die "could not move $part into place"
    GOT_FROM=$MIRROR/$file
}

# Download URL to OUT (through OUT.part); NAME gives the expected file type; a mirror would
# hold MIRRORED (default NAME).
from_upstream() {  # URL OUT NAME [MIRRORED]
    local url=$1 out=$2 part=$2.part hint="set DLMIE_MIRROR=DIR_OR_URL to a mirror holding ${4:-$3}"
    say "  downloading $url"
    curl_get "$url" "$part" || { rm -f -- "$part"; die "could not download $url. Check your connection and rerun, or $hint."; }
    check_format "$part" "$3" || { rm -f -- "$part"; die "the download of $url is damaged or incomplete (not a valid ${3##*.} file); deleted it. Rerun, or $hint."; }
    say "  $3: format checked (upstream files have no checksum here)"
    mv -- "$part" "$out" || die "could not move $part into place"
    GOT_FROM=$url
}

# Row i's file at OUT: from the mirror if it has it, else from upstream.
get_file() {  # i OUT
    local i=$1
    from_mirror "${R_FILE[i]}" "$2" && return 0
    need_upstream "$i"
    from_upstream "${R_URL[i]}" "$2" "${R_FILE[i]}"
}

need_upstream() {  # i: fail (with the row's note) if row i has no upstream URL
    local i=$1 where="no mirror is in use"
    [[ $MIRROR_KIND == none ]] || where="the mirror has no ${R_FILE[i]}"
    if [[ ${R_URL[i]} == - ]]; then
        die "${R_NAME[i]}: $where, and it has no upstream URL: ${R_NOTE[i]}"
    fi
    [[ $MIRROR_KIND == none ]] || say "  ${R_FILE[i]} is not in the mirror: falling back to upstream"
}

# --- installing ----------------------------------------------------------------------------

# Each data set is installed in a subshell with its own work folder inside $DATA (same file
# system, so moving into place is a rename). Its EXIT trap removes the work folder (downloads,
# .part files, half-unpacked files) and any entry already moved into place for a zip whose
# marker is not yet written: after a failure or Ctrl-C nothing half-done is left in $DATA.
WORK="" PLACED=()

cleanup() {
    local p
    for p in "${PLACED[@]}"; do rm -rf -- "$p"; done
    [[ -z $WORK ]] || rm -rf -- "$WORK"
}

# Move every entry of folder SRC into folder DEST, replacing leftovers of an earlier, unfinished
# install (a zip's entries are not in place as long as its marker is missing).
place_entries() {  # SRC DEST
    local entry target
    mkdir -p -- "$2"
    for entry in "$1"/* "$1"/.[!.]*; do
        [[ -e $entry ]] || continue
        target=$2/$(basename -- "$entry")
        if [[ -e $target ]]; then
            say "  replacing unfinished $target"
            mv -- "$target" "$WORK/old.$RANDOM"
        fi
        PLACED+=("$target")
        mv -- "$entry" "$target"
    done
}

install_row() {  # i
    local i=$1
    local file=${R_FILE[i]} dest=$DATA/${R_DEST[i]} member=${R_MEMBER[i]} zip unpacked
    [[ $member != - ]] || member=""
    [[ ${R_DEST[i]} != . ]] || dest=$DATA
    case ${R_INSTALL[i]} in
        file)
            get_file "$i" "$WORK/$file"
            mkdir -p -- "$(dirname -- "$dest")"
            mv -- "$WORK/$file" "$dest" ;;
        extract)   # a mirror holds the member itself; upstream it is inside the zip at URL
            if ! from_mirror "$file" "$WORK/$file"; then
                need_upstream "$i"
                zip=$WORK/$(basename -- "${R_URL[i]}")
                say "  ($file is inside $(basename -- "$zip"), which is downloaded whole)"
                from_upstream "${R_URL[i]}" "$zip" "$(basename -- "$zip")" "$file"
                unzip_ -p "$zip" "$member" >"$WORK/$file.part" 2>/dev/null ||
                    die "$(basename -- "$zip") from ${R_URL[i]} has no member $member"
                check_format "$WORK/$file.part" "$file" || die "$member in ${R_URL[i]} is damaged"
                mv -- "$WORK/$file.part" "$WORK/$file"
            fi
            mkdir -p -- "$(dirname -- "$dest")"
            mv -- "$WORK/$file" "$dest" ;;
        unzip)
            get_file "$i" "$WORK/$file"
            unpacked=$WORK/unpacked
            rm -rf -- "$unpacked"
            say "  unpacking $file into $dest${member:+ (only $member)}"
            if [[ -z $member ]]; then
                unzip_ -qo "$WORK/$file" -d "$unpacked" || die "could not unpack $file"
            else   # unzip matches the glob itself, "/" included
                unzip_ -qo "$WORK/$file" "$member" -d "$unpacked" || die "could not unpack $member from $file"
            fi
            rm -f -- "$WORK/$file"   # the archive is not kept
            place_entries "$unpacked" "$dest"
            mkdir -p -- "$MARKERS"
            say "$file from $GOT_FROM, unpacked $(date -u +%FT%TZ)" >"$MARKERS/$file"
            PLACED=() ;;   # complete: nothing to undo any more
        *) die "catalog: unknown install kind '${R_INSTALL[i]}' for ${R_NAME[i]}" ;;
    esac
}

install_dataset() {  # NAME; runs in a subshell, so die ends only this data set
    local name=$1 i
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    WORK=$(mktemp -d "$DATA/.get_datasets.XXXXXX")
    for i in $(rows_of "$name"); do
        if row_done "$i"; then
            say "  ${R_FILE[i]}: present"
        else
            install_row "$i"
        fi
    done
}

# --- main ----------------------------------------------------------------------------------

interrupted() {
    say "interrupted: nothing half-done is left; rerun ./get_datasets.sh to finish" >&2
    exit 130
}

main() {
    local names=() list=0 name failed=() rc valid
    while (($#)); do
        case $1 in
            -h | --help) usage; exit 0 ;;
            -l | --list) list=1 ;;
            --) shift; names+=("$@"); break ;;
            -*) usage >&2; die "unknown option $1" ;;
            *) names+=("$1") ;;
        esac
        shift
    done
    load_catalog
    if ((list)); then list_datasets; exit 0; fi

    if ((${#names[@]} == 0)); then mapfile -t names < <(dataset_names default); fi
    valid=" $(dataset_names | tr '\n' ' ')"
    for name in "${names[@]}"; do
        if [[ $valid != *" $name "* ]]; then
            die "unknown data set '$name'. Valid names:$(dataset_names | sed 's/^/ /' | paste -sd ',') (see ./get_datasets.sh --list)"
        fi
    done

    trap '[[ -z $SUMS || $MIRROR_KIND != url ]] || rm -f -- "$SUMS"' EXIT   # a URL mirror's sums
    trap interrupted INT TERM
    resolve_mirror
    say "Data folder: $DATA"
    mkdir -p -- "$DATA"

    for name in "${names[@]}"; do
        if is_present "$name"; then
            say "$name: present"
            continue
        fi
        say "$name: fetching (${R_SIZE[$(first_row "$name")]})"
        set +e   # a failing data set must not stop the others (errexit is back on inside)
        (set -e; install_dataset "$name")
        rc=$?
        set -e
        # The subshell saw Ctrl-C or a TERM (bash does not always tell us itself): stop.
        ((rc != 130 && rc != 143)) || interrupted
        if ((rc == 0)); then say "$name: done"; else failed+=("$name"); fi
    done
    if ((${#failed[@]})); then
        die "${#failed[@]} data set(s) failed: ${failed[*]} (see the messages above). Fix the cause, then rerun: ./get_datasets.sh ${failed[*]}"
    fi
    say "All done."
}

main "$@"
