module spegel-ts/bench/floor

go 1.26
